//! dsm's errors as Python exceptions: one class per [`dsm::ErrorCategory`], defined in Python
//! (`dsm/_errors.py`, so an input error can also be a `ValueError`), raised here with the Rust
//! error's whole message and its fields.

use dsm::ErrorCategory;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The Python class name for a category.
fn class_name(category: ErrorCategory) -> &'static str {
    match category {
        ErrorCategory::Input => "InputError",
        ErrorCategory::Unavailable => "UnavailableError",
        ErrorCategory::Upstream => "UpstreamError",
        ErrorCategory::Integrity => "IntegrityError",
        ErrorCategory::Incomplete => "IncompleteError",
        ErrorCategory::Cancelled => "CancelledError",
        ErrorCategory::Local => "LocalError",
    }
}

/// The message and every cause it does not already contain (a cache error's path, a network
/// error's URL and OS error), as the CLI prints them.
fn message(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// Raises `class_name` from `dsm._errors` with `message` and `fields` as attributes.
fn raise(py: Python<'_>, class: &str, message: String, fields: Bound<'_, PyDict>) -> PyErr {
    let made = py
        .import("dsm._errors")
        .and_then(|m| m.getattr(class))
        .and_then(|cls| cls.call((message.clone(),), Some(&fields)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        // The package is damaged (its Python part is missing): still say what went wrong.
        Err(e) => pyo3::exceptions::PyRuntimeError::new_err(format!("{message} ({e})")),
    }
}

/// A library error as the Python exception of its category.
pub(crate) fn to_py(py: Python<'_>, err: &dsm::Error) -> PyErr {
    let fields = PyDict::new(py);
    match err {
        dsm::Error::Incomplete(e) => {
            let _ = fields.set_item("symbol", e.symbol.as_str());
            let _ = fields.set_item("missing_ms", crate::response::ranges(&e.missing));
            let _ = fields.set_item("reasons", e.reasons.clone());
        }
        dsm::Error::Unavailable(
            dsm::UnavailableError::Future { symbol, .. }
            | dsm::UnavailableError::Delivered { symbol, .. }
            | dsm::UnavailableError::NoData { symbol, .. },
        ) => {
            let _ = fields.set_item("symbol", symbol.as_str());
        }
        dsm::Error::Unavailable(dsm::UnavailableError::OutsideArchive { dataset, .. }) => {
            let _ = fields.set_item("symbol", dataset.symbol.as_str());
        }
        _ => {}
    }
    raise(py, class_name(err.category()), message(err), fields)
}

/// Bad input found before the library was asked (an unknown market name, a time that is not
/// valid).
pub(crate) fn input(py: Python<'_>, err: &dyn std::error::Error) -> PyErr {
    raise(py, "InputError", message(err), PyDict::new(py))
}
