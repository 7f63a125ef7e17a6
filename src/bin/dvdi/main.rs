//! `dvdi`: inspect, repair and use mesos-dvdi volumes from the command line.

fn main() {
    eprintln!("dvdi: not yet implemented");
    std::process::exit(2);
}
