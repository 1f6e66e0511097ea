//! Progress display for long offline commands: a bar with rate and ETA on a terminal,
//! nothing on a pipe or under systemd (the commands print a summary at the end).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

const BAR: &str = "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}";
const SPINNER: &str = "{spinner} {elapsed} {msg}";

fn visible() -> bool {
    std::io::stderr().is_terminal()
}

fn styled(bar: &ProgressBar, template: &str) {
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
}

/// A bar over a known number of bytes (`iocfs import`).
pub struct Bar(Option<ProgressBar>);

impl Bar {
    pub fn new(total_bytes: u64) -> Bar {
        if !visible() {
            return Bar(None);
        }
        let bar = ProgressBar::new(total_bytes);
        styled(&bar, BAR);
        Bar(Some(bar))
    }

    pub fn set(&self, done: u64) {
        if let Some(b) = &self.0 {
            b.set_position(done);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// Named steps as a spinner, and a bar with rate and ETA while the step that reads
/// every committed file runs (`iocfs check`).
pub struct Phases {
    bar: Option<ProgressBar>,
    counting: AtomicBool,
}

impl Phases {
    pub fn new() -> Phases {
        let bar = visible().then(|| {
            let s = ProgressBar::new_spinner();
            s.enable_steady_tick(Duration::from_millis(120));
            styled(&s, SPINNER);
            s
        });
        Phases {
            bar,
            counting: AtomicBool::new(false),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Default for Phases {
    fn default() -> Self {
        Phases::new()
    }
}

impl crate::cli::check::Progress for Phases {
    fn phase(&self, what: &str) {
        if let Some(b) = &self.bar {
            if self.counting.swap(false, Ordering::Relaxed) {
                styled(b, SPINNER);
            }
            b.set_message(what.to_string());
        }
    }

    fn loaded(&self, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            if !self.counting.swap(true, Ordering::Relaxed) {
                b.reset();
                b.set_length(total);
                styled(b, BAR);
            }
            b.set_position(done);
        }
    }
}
