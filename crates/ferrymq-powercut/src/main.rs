//! `ferrymq-powercut`: mount a power-loss-modelling FUSE file system, or send it a command.
//!
//! ```text
//! ferrymq-powercut mount --mountpoint MNT --backing DIR --control SOCK [--from DIR] [--lie dir:SUB]...
//! ferrymq-powercut cut --control SOCK --into DIR
//! ferrymq-powercut stats --control SOCK
//! ferrymq-powercut quit --control SOCK
//! ```

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use ferrymq_powercut::model::Lie;
use ferrymq_powercut::{control, Mount};

#[derive(Parser)]
#[command(
    name = "ferrymq-powercut",
    about = "A FUSE file system that models POSIX power loss"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount and serve until `quit` or SIGTERM/SIGINT.
    Mount {
        /// Where to mount (an existing empty directory).
        #[arg(long)]
        mountpoint: PathBuf,
        /// A new directory for the file contents (current and durable).
        #[arg(long)]
        backing: PathBuf,
        /// The control socket to create.
        #[arg(long)]
        control: PathBuf,
        /// Start from a copy of this directory, all of it durable (a machine booting on
        /// what the last cut left).
        #[arg(long)]
        from: Option<PathBuf>,
        /// Acknowledge these syncs without doing them: `dir:SUB` (directory fsyncs of
        /// paths containing SUB, empty for all) or `file:SUB`. To show a test catches a
        /// missing fsync.
        #[arg(long)]
        lie: Vec<Lie>,
    },
    /// Cut the power and write the durable state into a directory.
    Cut {
        #[arg(long)]
        control: PathBuf,
        #[arg(long)]
        into: PathBuf,
    },
    /// Print counters.
    Stats {
        #[arg(long)]
        control: PathBuf,
    },
    /// Unmount and exit.
    Quit {
        #[arg(long)]
        control: PathBuf,
    },
}

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (control, line) = match cli.cmd {
        Cmd::Mount {
            mountpoint,
            backing,
            control,
            from,
            lie,
        } => {
            raise_fd_limit();
            let quit = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(sig, quit.clone())?;
            }
            let _ = std::fs::remove_file(&control);
            let listener = UnixListener::bind(&control)?;
            let mount = Mount::new(&mountpoint, &backing, from.as_deref(), lie.clone())?;
            println!(
                "ferrymq-powercut: mounted {} (backing {}, control {}, lies {:?})",
                mountpoint.display(),
                backing.display(),
                control.display(),
                lie
            );
            std::io::stdout().flush()?;
            mount.serve_control(&listener, &quit)?;
            let _ = std::fs::remove_file(&control);
            println!("ferrymq-powercut: unmounted {}", mountpoint.display());
            return Ok(());
        }
        Cmd::Cut { control, into } => (control, format!("cut {}", into.display())),
        Cmd::Stats { control } => (control, "stats".to_string()),
        Cmd::Quit { control } => (control, "quit".to_string()),
    };
    let answer = control::send(&control, &line)?;
    println!("{answer}");
    if answer.starts_with("ok") {
        Ok(())
    } else {
        anyhow::bail!("{answer}")
    }
}
