//! Smoke test of the propagation benchmark: a few samples of each path, each one a number.
//! Timing goals are the benchmark's to report, not this test's to assert (CI machines vary).

use fluxconfig_testbed::bench_propagation::run_propagation_bench;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_benchmark_measures_both_paths() {
    const SAMPLES: usize = 4;
    let report = run_propagation_bench(SAMPLES).await;
    assert!(report.errors.is_empty(), "{report}");
    assert_eq!(report.create_to_present.samples.len(), SAMPLES, "{report}");
    assert_eq!(report.status_to_show.samples.len(), SAMPLES, "{report}");
    for latency in [&report.create_to_present, &report.status_to_show] {
        let (Some(p50), Some(p99)) = (latency.p50(), latency.p99()) else {
            panic!("no percentiles: {report}");
        };
        assert!(p50 <= p99 && !p99.is_zero(), "{report}");
    }
}
