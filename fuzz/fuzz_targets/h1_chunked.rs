//! The HTTP/1 fast path's chunked body scanner, fed whole and in pieces:
//! where the body ends must not depend on how its bytes arrive.
//!
//! Input: the first byte seeds the split points, the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_gate::fuzzing::ChunkScanner;

fn scan(body: &[u8], mut cut: impl FnMut(usize) -> usize) -> Result<(usize, bool), String> {
    let mut scanner = ChunkScanner::default();
    let mut at = 0;
    while at < body.len() && !scanner.is_done() {
        let len = cut(body.len() - at).clamp(1, body.len() - at);
        let piece = &body[at..at + len];
        let used = scanner.feed(piece)?;
        assert!(used <= piece.len());
        at += used;
        if used < piece.len() {
            assert!(scanner.is_done(), "stopped early without ending");
            break;
        }
    }
    Ok((at, scanner.is_done()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let whole = scan(body, |left| left);
    let mut state = u32::from(seed) | 1;
    let pieces = scan(body, |_| {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (state >> 16) as usize % 7 + 1
    });
    let bytewise = scan(body, |_| 1);
    assert_eq!(whole.is_ok(), pieces.is_ok(), "{whole:?} vs {pieces:?}");
    assert_eq!(whole.is_ok(), bytewise.is_ok(), "{whole:?} vs {bytewise:?}");
    if let (Ok(a), Ok(b), Ok(c)) = (&whole, &pieces, &bytewise) {
        assert_eq!(a, b);
        assert_eq!(a, c);
    }
});
