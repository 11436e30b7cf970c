//! Any bytes as one request frame, on a broker's listener and on a controller's: decoding must
//! return a request, an immediate reply or an error, and never panic or abort (the node closes
//! the connection on an error).
#![no_main]

use libfuzzer_sys::fuzz_target;
use surety::wire::versions::{CONTROLLER_APIS, SERVED_APIS};

fuzz_target!(|data: &[u8]| {
    let frame = bytes::Bytes::copy_from_slice(data);
    let _ = surety::wire::codec::decode_request(frame.clone(), SERVED_APIS);
    let _ = surety::wire::codec::decode_request(frame, CONTROLLER_APIS);
});
