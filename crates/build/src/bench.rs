//! Benchmarks (not tests): see `cargo xtask bench`.

use crate::{Context, Error};

pub fn run(_ctx: &Context, _image: &str) -> Result<(), Error> {
    Err(Error::msg("not yet"))
}
