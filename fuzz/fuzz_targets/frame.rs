//! Bytes an agent (or anyone reaching the agent port) sends, read as frames by the control
//! plane, and the control plane's bytes read by an agent: every input ends in a message or an
//! error, never a panic, a hang or an allocation past the frame limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use splai_protocol::{AgentMessage, ControlMessage, FrameReader};

/// Small, so that the limit's own path is reached often.
const MAX_FRAME: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut agents = FrameReader::new(data, MAX_FRAME);
        while agents.recv::<AgentMessage>().await.is_ok() {}
        let mut control = FrameReader::new(data, MAX_FRAME);
        while control.recv::<ControlMessage>().await.is_ok() {}
    });
    let _ = splai_protocol::frame::decode::<AgentMessage>(data);
});
