//! Revocation-to-refusal time at the gate (`--crl-refresh 1s`): 20 trials,
//! median and maximum. Ignored by default; `bench/revocation.sh` runs it.

use std::time::{Duration, Instant};

use super::ca::CaServer;
use super::support::{full, gate};
use crate::upstream::Echo;

#[test]
#[ignore = "a measurement (about 30 s); run by bench/revocation.sh"]
fn revocation_to_refusal_time() {
    let trials: usize = std::env::var("WARD_REVOCATION_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let ca = CaServer::start(&[]);
    let echo = Echo::start();
    let crl = ca.crl_url();
    let gate = gate(
        &ca,
        &echo.url(),
        "gate",
        &["--crl", &crl, "--crl-refresh", "1s"],
    );
    let mut times = Vec::with_capacity(trials);
    for i in 0..trials {
        let issued = ca.issue(&format!("t{i}"));
        let client = full(&ca, &issued);
        assert_eq!(client.get_once(gate.addr).unwrap(), 200);
        // Trials would otherwise fall into the same phase of the gate's
        // 1 s poll; spread them over the second.
        std::thread::sleep(Duration::from_millis((i as u64 * 7919) % 1000));
        ca.revoke(&issued.serial);
        // From the moment `ward revoke` returned (the CA has recorded the
        // revocation and re-signed its CRL), new full handshakes every 20 ms.
        let start = Instant::now();
        while client.get_once(gate.addr).is_ok() {
            assert!(start.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(20));
        }
        times.push(start.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = if trials % 2 == 1 {
        ms(times[trials / 2])
    } else {
        (ms(times[trials / 2 - 1]) + ms(times[trials / 2])) / 2.0
    };
    println!(
        "revocation-to-refusal over {trials} trials (crl-refresh 1s, polling every 20 ms): median {median:.0} ms, max {:.0} ms, min {:.0} ms",
        ms(times[trials - 1]),
        ms(times[0])
    );
}
