//! The upstream response body decoder (`upstream::h1` body: length, chunked, until
//! close), fed the same stream in different splits, as reads would deliver it.
//!
//! Input: a framing byte (0: Content-Length from the next two bytes, 1: chunked,
//! 2: until close; bit 7: the peer closes after the stream), a split seed byte, then
//! the stream. Invariants, beyond not panicking:
//! - whole, a byte at a time and in seeded random pieces: the same verdict, the same
//!   body, the same trailers and the same bytes left after the body;
//! - the body never has more bytes than the stream, no data frame is empty, nothing
//!   comes after the trailers, and what is left is the stream's own tail;
//! - length: the body is exactly the first n bytes; until close: all of it; chunked:
//!   at least the last chunk's `0\r\n` and the empty line were consumed (the trailer
//!   section is read by httparse, which also ends it at a bare LF: 4 bytes).
#![no_main]

use bytes::BytesMut;
use healgate::fuzzing::{BodyDecoder, Framing, Piece};
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
struct Decoded {
    data: Vec<u8>,
    trailers: Option<HeaderMap>,
    rest: Vec<u8>,
}

/// Feed `input` in pieces of the sizes `next` yields, then end the stream if `close`.
/// Err: the decoder's refusal (its text may name where it noticed, so it is not
/// compared) or a stall (more bytes needed, none coming).
fn decode(
    framing: Framing,
    input: &[u8],
    close: bool,
    mut next: impl FnMut() -> usize,
) -> Result<Decoded, ()> {
    let mut d = BodyDecoder::new(framing);
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut data = Vec::new();
    let mut trailers = None;
    loop {
        match d.decode(&mut buf).map_err(|_| ())? {
            Piece::Data(bytes) => {
                assert!(!bytes.is_empty(), "an empty data frame");
                assert!(trailers.is_none(), "data after the trailers");
                data.extend_from_slice(&bytes);
            }
            Piece::Trailers(t) => {
                assert!(trailers.is_none(), "two trailer sections");
                trailers = Some(t);
                // Trailers end the body.
                assert!(d.is_done(), "trailers, but the body goes on");
            }
            Piece::End => break,
            Piece::More if fed < input.len() => {
                let n = next().clamp(1, input.len() - fed);
                buf.extend_from_slice(&input[fed..fed + n]);
                fed += n;
            }
            Piece::More if close => {
                d.eof().map_err(|_| ())?;
                break;
            }
            Piece::More => return Err(()),
        }
        assert!(data.len() <= fed, "more body bytes than were read");
    }
    assert!(d.is_done(), "ended but not done");
    let mut rest = buf.to_vec();
    rest.extend_from_slice(&input[fed..]);
    Ok(Decoded {
        data,
        trailers,
        rest,
    })
}

fuzz_target!(|raw: &[u8]| {
    let [kind, seed, ref more @ ..] = *raw else {
        return;
    };
    let close = kind & 0x80 != 0;
    let (framing, input) = match kind & 0x7f {
        0 => {
            let [a, b, ref input @ ..] = *more else {
                return;
            };
            (
                Framing::Length(u64::from(u16::from_le_bytes([a, b]))),
                input,
            )
        }
        1 => (Framing::Chunked, more),
        2 => (Framing::UntilClose, more),
        _ => return,
    };
    let whole = decode(framing, input, close, || usize::MAX);
    let bytewise = decode(framing, input, close, || 1);
    assert_eq!(whole, bytewise, "whole vs a byte at a time");
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    let random = decode(framing, input, close, || {
        // xorshift32: pieces of 1 to 64 bytes.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x % 64) as usize + 1
    });
    assert_eq!(whole, random, "whole vs random pieces (seed {seed})");

    let Ok(got) = whole else {
        return;
    };
    assert!(
        got.data.len() + got.rest.len() <= input.len(),
        "bytes made up"
    );
    assert!(
        input.ends_with(&got.rest),
        "the rest is not the stream's tail"
    );
    match framing {
        Framing::Length(n) => {
            let n = n as usize;
            assert_eq!(
                got.data,
                input[..n.min(input.len())],
                "not the first {n} bytes"
            );
            assert!(input.len() >= n, "cut short, yet Ok");
            assert!(got.trailers.is_none());
        }
        Framing::UntilClose => {
            assert_eq!(got.data, input, "until close: all of it");
            assert!(got.rest.is_empty());
        }
        Framing::Chunked => {
            let consumed = input.len() - got.rest.len();
            assert!(
                consumed >= got.data.len() + 4,
                "chunked without its framing: {consumed} bytes for {} of body",
                got.data.len()
            );
            assert!(
                input[..consumed].ends_with(b"\n"),
                "ends with an empty line"
            );
        }
        Framing::Upgrade => unreachable!(),
    }
});
