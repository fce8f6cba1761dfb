//! Record batches (magic v2): encoding, decoding, compression and control records.
