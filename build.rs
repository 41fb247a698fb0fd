//! Marks the tests that read the shared data folder, or start Redis, PostgreSQL and nginx, as
//! ignored when those are absent (see caption-test-support).
fn main() {
    caption_test_support::declare_shared_data_cfg();
    caption_test_support::declare_local_servers_cfg();
}
