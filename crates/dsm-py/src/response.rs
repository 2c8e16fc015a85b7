//! One symbol's answer as Python sees it: its rows through the Arrow C stream interface (zero
//! copy into pyarrow, polars, DuckDB), its gaps and missing ranges, and the same report as the
//! CLI's `--json`.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::ffi_stream::FFI_ArrowArrayStream;
use arrow::record_batch::{RecordBatch, RecordBatchIterator};
use dsm::manager::SymbolResult;
use dsm::report::FetchReport;
use dsm::{DataKind, TimeRange};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

/// The rows and report of one symbol (wrapped by `dsm.Response` in Python).
#[pyclass(module = "dsm._dsm", frozen, name = "RawResponse")]
#[derive(Debug)]
pub(crate) struct Response {
    symbol: String,
    time_column: &'static str,
    schema: SchemaRef,
    batches: Arc<Vec<RecordBatch>>,
    rows: usize,
    gaps: Vec<(i64, i64)>,
    missing: Vec<(i64, i64)>,
    report: String,
}

/// Ranges as `(start, end)` epoch-ms pairs, as Python receives them.
pub(crate) fn ranges(rs: &[TimeRange]) -> Vec<(i64, i64)> {
    rs.iter().map(|r| (r.start(), r.end())).collect()
}

impl Response {
    /// The answer for one symbol of a request for `kind`.
    pub(crate) fn new(kind: DataKind, result: SymbolResult) -> Response {
        let report = FetchReport::of(kind, std::slice::from_ref(&result), &result.summary);
        // The report is plain data; serialising it cannot fail.
        let report = serde_json::to_string(&report).unwrap_or_else(|_| "{}".to_owned());
        Response {
            symbol: result.symbol.as_str().to_owned(),
            time_column: dsm::schema::time_column(kind),
            rows: result.num_rows(),
            gaps: ranges(&result.gaps),
            missing: ranges(&result.missing),
            schema: result.schema,
            batches: Arc::new(result.batches),
            report,
        }
    }
}

#[pymethods]
impl Response {
    /// The symbol.
    #[getter]
    fn symbol(&self) -> &str {
        &self.symbol
    }

    /// The name of the time column (`open_time`, `funding_time`, `time`).
    #[getter]
    fn time_column(&self) -> &'static str {
        self.time_column
    }

    /// Ranges the exchange confirmed have no data, `[start, end)` in epoch ms.
    #[getter]
    fn gaps(&self) -> Vec<(i64, i64)> {
        self.gaps.clone()
    }

    /// Ranges that could not be obtained from the allowed sources, `[start, end)` in epoch ms.
    #[getter]
    fn missing(&self) -> Vec<(i64, i64)> {
        self.missing.clone()
    }

    /// Whether the whole range was obtained (rows and confirmed gaps account for all of it).
    #[getter]
    fn complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// The report (`dsm fetch --json`'s document for this symbol), as JSON text.
    #[getter]
    fn report_json(&self) -> &str {
        &self.report
    }

    fn __len__(&self) -> usize {
        self.rows
    }

    /// The Arrow PyCapsule interface: a new stream over the same (shared, never copied) batches at
    /// every call, so readers that call it twice (DuckDB) get all rows each time. A requested
    /// schema is ignored, as the interface allows: the schema is dsm's.
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let batches = Arc::clone(&self.batches);
        let reader = RecordBatchIterator::new(
            (0..batches.len()).map(move |i| Ok(batches[i].clone())),
            Arc::clone(&self.schema),
        );
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new_with_value(py, stream, c"arrow_array_stream")
    }

    fn __repr__(&self) -> String {
        format!(
            "<dsm response {}: {} rows, {} gaps, {}>",
            self.symbol,
            self.rows,
            self.gaps.len(),
            if self.missing.is_empty() {
                "complete"
            } else {
                "incomplete"
            }
        )
    }
}
