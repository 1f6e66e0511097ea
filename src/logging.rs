//! The daemon's log: env_logger, with fuser's one message that is never a problem kept out.

/// Log at `level` (`RUST_LOG` overrides), fuser's own messages from warnings up.
pub fn init(level: &str) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level.parse().unwrap_or(log::LevelFilter::Info));
    builder.filter_module("fuser", log::LevelFilter::Warn);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    let inner = builder.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Quiet(inner))).is_ok() {
        log::set_max_level(max);
    }
}

struct Quiet(env_logger::Logger);

/// fuser logs at ERROR a reply the kernel no longer waits for (ENOENT: the request was
/// interrupted, or the file system is being unmounted and the kernel ended every request
/// in flight, as at a stop that races a close's RELEASE). Nothing is lost: a caller, if
/// the request had one, already got its answer (EINTR, or ECONNABORTED).
fn is_unwanted_reply(record: &log::Record) -> bool {
    record.target() == "fuser::reply"
        && record
            .args()
            .to_string()
            .ends_with("No such file or directory (os error 2)")
}

impl log::Log for Quiet {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if self.0.matches(record) && !is_unwanted_reply(record) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unwanted(target: &str, args: std::fmt::Arguments) -> bool {
        let record = log::Record::builder()
            .target(target)
            .level(log::Level::Error)
            .args(args)
            .build();
        is_unwanted_reply(&record)
    }

    #[test]
    fn only_a_reply_to_a_gone_request_is_kept_out() {
        assert!(unwanted(
            "fuser::reply",
            format_args!("Failed to send FUSE reply: No such file or directory (os error 2)")
        ));
        assert!(!unwanted(
            "fuser::reply",
            format_args!("Failed to send FUSE reply: Bad file descriptor (os error 9)")
        ));
        assert!(!unwanted(
            "iocfs::store",
            format_args!("No such file or directory (os error 2)")
        ));
    }
}
