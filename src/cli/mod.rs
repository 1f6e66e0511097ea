//! The offline and reporting commands of the `iocfs` binary: what runs without a mount
//! (`check`, `import`, `backup`) or only reads one (`stats`), and their progress display.

pub mod backup;
pub mod check;
pub mod import;
pub mod progress;
pub mod stats;
