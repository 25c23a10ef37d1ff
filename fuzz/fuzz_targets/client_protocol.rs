//! The client side of the wire: packet framing (split, joined, truncated, oversized), the
//! handshake response, prepared-statement parameter blocks, and the SET parser, on arbitrary
//! bytes. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use router::protocol::packet::PacketReader;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    // A small limit so that the refusal of oversized packets is reached too.
    let max_len = 1 + usize::from(data.first().copied().unwrap_or(0)) * 64;
    runtime.block_on(async {
        let mut reader = PacketReader::new(data);
        while let Ok(Some((_seq, _last, payload))) = reader.read_message(max_len).await {
            let _ = router::protocol::handshake::parse_client_hello(&payload);
            for n in [0, 1, 2, 7, 64] {
                let _ = router::shard::params::decode(&payload, n);
            }
            let _ = router::protocol::parse_ok(&payload);
            let _ = router::protocol::parse_err(&payload);
            let _ = router::protocol::parse_eof(&payload);
            let _ = router::protocol::handshake::parse_backend_greeting(&payload);
            if let Some(rest) = payload.get(1..) {
                let _ = router::classify::parse_set(&String::from_utf8_lossy(rest));
            }
        }
    });
});
