//! Standard output that a closed pipe does not turn into a panic.
//!
//! `println!` panics when standard output is gone (`ward cert inspect … |
//! head -1`: Rust ignores SIGPIPE, so the write fails with EPIPE). These
//! macros drop output nobody reads and carry on, so the exit status still
//! says what the command found; any other write error (a full disk) ends
//! the command with status 2 and one line on standard error.

use std::fmt;
use std::io::{self, Write};

/// Like `println!`, for standard output that may be a closed pipe.
macro_rules! outln {
    ($($arg:tt)+) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)+)))
    };
}

/// Like `print!`, for standard output that may be a closed pipe.
macro_rules! out {
    ($($arg:tt)+) => {
        $crate::out::write(format_args!($($arg)+))
    };
}

/// Writes `args` to standard output; see the module documentation for
/// what happens when that fails.
pub(crate) fn write(args: fmt::Arguments<'_>) {
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args) {
        failed(&e);
    }
}

/// Handles a failed write to standard output.
fn failed(e: &io::Error) {
    if e.kind() == io::ErrorKind::BrokenPipe {
        return;
    }
    eprintln!("ward: error: writing to standard output: {e}");
    std::process::exit(2);
}
