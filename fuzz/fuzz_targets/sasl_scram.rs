//! Feeds arbitrary bytes to the SCRAM client as the server's messages: server-first and
//! server-final, split at the first 0 byte (see `fuzz_scram_server_messages`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rekafka::connection::security::fuzz_scram_server_messages;

fuzz_target!(|data: &[u8]| {
    let _ = fuzz_scram_server_messages(data);
});
