//! Process exit codes. A config error has its own code so that systemd (`RestartPreventExitStatus=78`)
//! does not restart-loop on a file that will not parse.

/// Everything went well.
pub const EXIT_OK: i32 = 0;
/// A runtime failure (I/O, FFmpeg missing, database unavailable).
pub const EXIT_FAILURE: i32 = 1;
/// Bad command-line usage or an invalid value given on the command line (clap uses 2 too).
pub const EXIT_USAGE: i32 = 2;
/// The thing named does not exist (camera, destination, stream).
pub const EXIT_NOT_FOUND: i32 = 3;
/// The request conflicts with the current state (id already used, camera still in use).
pub const EXIT_CONFLICT: i32 = 4;
/// A peer could not be reached (camera probe failed).
pub const EXIT_UNAVAILABLE: i32 = 69;
/// The configuration file or environment is invalid (sysexits EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;
