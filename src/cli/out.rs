//! The command line's standard output. A reader that goes away before the output ends
//! (`vistter-agent events | head -3`) ends the command quietly, as the shell's own tools do,
//! instead of a panic from `println!`; any other write error is reported once.

use std::fmt;
use std::io::{self, Write as _};

/// Writes `args` (and a newline) to standard output, or ends the process as described above.
pub fn write(args: fmt::Arguments<'_>, newline: bool) {
    let mut out = io::stdout().lock();
    let written = if newline { writeln!(out, "{args}") } else { write!(out, "{args}") };
    if let Err(e) = written.and_then(|()| out.flush()) {
        exit_on(&e);
    }
}

fn exit_on(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("vistter-agent: cannot write to standard output: {e}");
    std::process::exit(1);
}
