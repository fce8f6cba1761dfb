//! Decodes arbitrary bytes as Kafka's ConsumerProtocol subscription and assignment (the
//! JoinGroup member metadata and the SyncGroup assignment other members and leaders send).
//! What decodes must re-encode at the newest version and decode back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rekafka::group::protocol::{Assignment, Subscription};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Subscription::decode(data) {
        let again = Subscription::decode(&s.encode());
        assert_eq!(again.as_ref().ok(), Some(&s), "subscription round trip");
        for v in 0..=2 {
            std::hint::black_box(Subscription::decode(&s.encode_version(v)).is_ok());
        }
    }
    if let Ok(a) = Assignment::decode(data) {
        let again = Assignment::decode(&a.encode());
        assert_eq!(again.as_ref().ok(), Some(&a), "assignment round trip");
    }
});
