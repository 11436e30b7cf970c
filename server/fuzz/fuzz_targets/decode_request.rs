//! Any bytes as one request frame: decoding must return a request, an immediate reply or an
//! error, and never panic or abort (the broker closes the connection on an error).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = surety::wire::codec::decode_request(bytes::Bytes::copy_from_slice(data));
});
