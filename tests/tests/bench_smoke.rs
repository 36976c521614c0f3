//! `testbed bench` at toy scale, agent and controller in-process: every figure of the report
//! is present. Timing goals are not asserted; a loaded CI machine would make them flaky.

use std::time::Duration;

use fluxconfig_testbed::bench::{run_bench, BenchOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_at_tiny_scale_reports_every_figure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("BENCHMARKS.md");
    let report = run_bench(BenchOptions {
        scales: vec![10, 20],
        samples: 3,
        steady: Duration::from_secs(2),
        converge_timeout: Duration::from_secs(120),
        binaries: None,
        output: Some(output.clone()),
        command: "bench_smoke".into(),
    })
    .await
    .expect("bench run");

    assert!(report.notes.is_empty(), "{:?}", report.notes);
    assert!(report.yardstick_p50.is_some_and(|d| !d.is_zero()));
    for l in [report.propagation, report.compliance] {
        let l = l.expect("latency measured");
        assert_eq!((l.samples, l.failures), (3, 0), "{l:?}");
        assert!(!l.p50.is_zero() && l.p99 >= l.p50, "{l:?}");
    }
    assert_eq!(report.convergence.len(), 2);
    for c in &report.convergence {
        assert!(c.converged, "{c:?}");
        assert_eq!(c.compliant, c.total, "{c:?}");
        assert!(c.requests > 0 && c.writes > 0, "{c:?}");
    }
    assert_eq!(report.convergence[1].added, 10);
    let steady = report.steady.expect("steady state measured");
    assert_eq!(steady.window, Duration::from_secs(2));
    assert!(report.bytes_per_304.is_some_and(|b| b > 0));
    // In-process: no RSS of separate binaries.
    assert!(report.rss_idle.is_none() && report.rss_loaded.is_none());

    let text = std::fs::read_to_string(&output).expect("report written");
    for needle in [
        "Propagation",
        "Compliance",
        "convergence to 20",
        "304",
        "RSS",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    // Hand-written notes below the marker survive a rewrite.
    let edited = format!("{text}\nkept note\n");
    std::fs::write(&output, edited).expect("edit");
    fluxconfig_testbed::bench::write_markdown(&output, &report).expect("rewrite");
    let again = std::fs::read_to_string(&output).expect("reread");
    assert!(again.contains("kept note"), "{again}");
}
