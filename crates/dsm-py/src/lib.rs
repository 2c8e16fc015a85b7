//! dsm for Python: the `dsm._dsm` extension module behind the `dsm` package.
//!
//! Thin like the CLI: it turns Python's arguments into the library's requests, runs them on one
//! runtime that it owns and shuts down before the interpreter finalises ([`bridge`]), and hands the
//! rows to Python through the Arrow C stream interface, without copying ([`response`]). Everything
//! Python users touch directly (time conversion, frames, the exception classes, `async with`)
//! lives in the package's Python part, `python/dsm`.

use pyo3::prelude::*;

/// Rust's allocations in the extension (every answer's buffers among them) use mimalloc, which
/// reuses freed memory; glibc's defaults give a year of candles back to the kernel after each read
/// and fault it in again for the next (BENCHMARKS.md, "dsm from Python").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bridge;
mod errors;
mod manager;
mod response;

#[pymodule]
fn _dsm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<manager::Manager>()?;
    m.add_class::<response::Response>()?;
    m.add_class::<bridge::Pending>()?;
    m.add_function(wrap_pyfunction!(bridge::shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(manager::parse_instant, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
