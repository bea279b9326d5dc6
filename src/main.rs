//! The `imago` binary: parses settings, opens the broker, serves until SIGINT/SIGTERM.

use imago::broker::Broker;
use imago::config::{Config, Parsed};
use imago::server::Server;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match Config::from_args(&args) {
        Ok(Parsed::Run(cfg)) => cfg,
        Ok(Parsed::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("imago {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("imago: {e}");
            return ExitCode::from(2);
        }
    };
    let broker = match Broker::open(*cfg) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("imago: cannot open the data directory: {e}");
            return ExitCode::from(1);
        }
    };
    let (server, addr) = match Server::bind(broker) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("imago: cannot listen: {e}");
            return ExitCode::from(1);
        }
    };
    println!("imago {} listening on {addr}", env!("CARGO_PKG_VERSION"));
    let _ = std::io::stdout().flush();
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imago: {e}");
            ExitCode::from(1)
        }
    }
}
