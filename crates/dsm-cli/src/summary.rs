//! What a fetch produced, as text for humans (stderr); the JSON for scripts is the library's
//! [`dsm::report::FetchReport`].

use std::path::Path;

use dsm::report::{FetchReport, Sources};

/// Human-readable lines, one per symbol plus one per gap.
pub fn text_lines(report: &FetchReport) -> Vec<String> {
    let mut lines = Vec::new();
    for s in &report.symbols {
        let span = match (&s.first, &s.last) {
            (Some(f), Some(l)) => format!("{f} .. {l}"),
            _ => "no rows".to_owned(),
        };
        let target = s
            .path
            .as_deref()
            .map_or_else(|| "nothing written".to_owned(), display);
        lines.push(format!(
            "{}: {} rows ({span}), {} gaps -> {target}  [{}]",
            s.symbol,
            s.rows,
            s.gaps.len(),
            cost(&s.sources, s.elapsed_ms)
        ));
        for g in &s.gaps {
            lines.push(format!(
                "  gap (no data upstream): {} .. {}",
                g.start, g.end
            ));
        }
        for m in &s.missing {
            lines.push(format!(
                "  missing (not obtained): {} .. {}",
                m.start, m.end
            ));
        }
        for o in &s.outside_life {
            lines.push(format!(
                "  outside the series' life (after delivery, or where the archive has no such series): {} .. {}",
                o.start, o.end
            ));
        }
    }
    if report.symbols.len() > 1 {
        lines.push(format!(
            "total: {} rows, {} gaps  [{}]",
            report.total.rows,
            report.total.gaps,
            cost(&report.total.sources, report.total.elapsed_ms)
        ));
    }
    lines
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn cost(s: &Sources, elapsed_ms: u64) -> String {
    format!(
        "cache {} hits; vision {} req {}; rest {} req {}; {:.1}s",
        s.cache.hits,
        s.vision.requests,
        indicatif::HumanBytes(s.vision.bytes),
        s.rest.requests,
        indicatif::HumanBytes(s.rest.bytes),
        elapsed_ms as f64 / 1000.0
    )
}
