//! Marks the tests that start Redis, PostgreSQL and nginx as ignored where those are not
//! installed (see caption-test-support).
fn main() {
    caption_test_support::declare_local_servers_cfg();
}
