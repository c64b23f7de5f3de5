//! Progress bars: drawn on a terminal, silent otherwise.

use cairn_formats::Digest;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// One bar per blob being pushed or pulled.
pub struct BlobBars {
    multi: Option<MultiProgress>,
    verb: &'static str,
    bars: Mutex<BTreeMap<Digest, ProgressBar>>,
}

impl BlobBars {
    pub fn new(enabled: bool, verb: &'static str) -> BlobBars {
        BlobBars {
            multi: enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            verb,
            bars: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn clear(&self) {
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

/// Each blob's bar (the registry client reports through these).
impl BlobBars {
    pub fn start(&self, digest: &Digest, size: u64) {
        let Some(multi) = &self.multi else { return };
        let mut bars = self.bars.lock().expect("bars");
        let bar = bars
            .entry(*digest)
            .or_insert_with(|| multi.add(bytes(true, size, self.verb)));
        bar.set_message(format!("{} {}", self.verb, &digest.hex()[..12]));
        bar.set_position(0);
    }
    pub fn bytes(&self, digest: &Digest, n: u64) {
        if let Some(bar) = self.bars.lock().expect("bars").get(digest) {
            bar.inc(n);
        }
    }
    pub fn done(&self, digest: &Digest) {
        if let Some(bar) = self.bars.lock().expect("bars").remove(digest) {
            bar.finish_and_clear();
        }
    }
}

pub fn bytes(enabled: bool, total: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), target(enabled));
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

pub fn spinner(enabled: bool, message: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, target(enabled));
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
    );
    bar.set_message(message.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

fn target(enabled: bool) -> ProgressDrawTarget {
    if enabled {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}
