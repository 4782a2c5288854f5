//! The control socket: a Unix stream socket taking one command per line and answering
//! one line, `ok ...` or `err MESSAGE`.
//!
//! - `cut DIR`: cuts the power (the file system freezes: every change fails with EIO
//!   from now on, reads go on) and writes the durable state into `DIR` (a new or empty
//!   directory). Answers `ok dirs=N files=N bytes=N paths_lost=N unsynced_bytes=N`.
//! - `stats`: `ok writes=N bytes_written=N file_syncs=N dir_syncs=N lies=N frozen=B`.
//! - `quit`: unmounts and exits.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::fs::SharedModel;

/// Runs one command against the model; `quit` sets `quit`.
pub fn command(model: &SharedModel, line: &str, quit: &AtomicBool) -> String {
    let line = line.trim();
    let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
    let mut m = model.lock().unwrap_or_else(|p| p.into_inner());
    match verb {
        "cut" if !arg.is_empty() => {
            m.cut();
            match m.materialize(Path::new(arg.trim())) {
                Ok(r) => format!(
                    "ok dirs={} files={} bytes={} paths_lost={} unsynced_bytes={}",
                    r.dirs, r.files, r.bytes, r.paths_lost, r.unsynced_bytes
                ),
                Err(e) => format!("err materializing into {arg}: {e}"),
            }
        }
        "stats" => {
            let s = m.stats();
            format!(
                "ok writes={} bytes_written={} file_syncs={} dir_syncs={} lies={} frozen={}",
                s.writes,
                s.bytes_written,
                s.file_syncs,
                s.dir_syncs,
                s.lies,
                m.is_frozen()
            )
        }
        "quit" => {
            quit.store(true, Ordering::SeqCst);
            "ok".to_string()
        }
        _ => format!("err unknown command {line:?} (cut DIR, stats, quit)"),
    }
}

fn session(model: &SharedModel, stream: UnixStream, quit: &AtomicBool) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut out = stream.try_clone()?;
    for line in BufReader::new(stream).lines() {
        let answer = command(model, &line?, quit);
        writeln!(out, "{answer}")?;
        if quit.load(Ordering::SeqCst) {
            break;
        }
    }
    Ok(())
}

/// Serves the socket until `quit` is set (by a `quit` command or a signal).
pub fn serve(listener: &UnixListener, model: &SharedModel, quit: &AtomicBool) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    while !quit.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = session(model, stream, quit) {
                    eprintln!("ferrymq-powercut: control connection: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends one command to a running instance and returns its answer line.
pub fn send(socket: &Path, line: &str) -> io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    writeln!(s, "{line}")?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer)?;
    Ok(answer.trim_end().to_string())
}
