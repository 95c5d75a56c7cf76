//! Integration tests of `muster_collect::scan` through its public surface.

mod scan;
