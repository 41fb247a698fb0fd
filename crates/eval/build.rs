//! Marks the tests that read the shared data folder as ignored when it is absent
//! (see caption-test-support).
fn main() {
    caption_test_support::declare_shared_data_cfg();
}
