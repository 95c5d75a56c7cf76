//! `muster-loadgen`: simulates N agents against a Muster server.

fn main() {}
