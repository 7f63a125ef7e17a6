//! A plugin (test double) that holds the requests a test picks until the test opens its gate: a
//! plugin stuck on its storage, on demand, without sleeping or timing anything. Every other
//! request, and every request once the gate is open, is served by the well-behaved memory plugin.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex};

use super::plugin::{memory_plugin, Request, TestPlugin};

/// The gate: held requests wait on it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn is_open(&self) -> bool {
        *self.open.lock().unwrap()
    }

    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// The plugin, served until dropped (which opens the gate first).
pub struct Gated {
    gate: Arc<Gate>,
    held: Mutex<mpsc::Receiver<String>>,
    // Declared last: dropped after the gate is open, so its connection threads can end.
    _plugin: TestPlugin,
}

impl Gated {
    /// Serves driver `driver` at `plugins/DRIVER.sock`, its volumes directories under `root`,
    /// holding each request `hold` picks while the gate is shut.
    pub fn start(
        plugins: &Path,
        driver: &str,
        root: PathBuf,
        hold: impl Fn(&Request) -> bool + Send + Sync + 'static,
    ) -> Self {
        std::fs::create_dir_all(plugins).unwrap();
        let gate = Arc::new(Gate::default());
        let (tx, rx) = mpsc::channel();
        let inner = memory_plugin(root);
        let g = Arc::clone(&gate);
        let tx = Mutex::new(tx);
        let plugin = TestPlugin::unix(&plugins.join(format!("{driver}.sock")), move |req| {
            if hold(req) && !g.is_open() {
                let name = req.body["Name"].as_str().unwrap_or("");
                let _ = tx.lock().unwrap().send(format!("{} {name}", req.path));
                g.wait();
            }
            inner(req)
        });
        Self {
            gate,
            held: Mutex::new(rx),
            _plugin: plugin,
        }
    }

    /// Waits for the next request to be held; says which (`/VolumeDriver.Mount NAME`).
    pub fn next_held(&self) -> String {
        self.held.lock().unwrap().recv().unwrap()
    }

    /// Lets every held request, and every later one, through.
    pub fn open(&self) {
        self.gate.open();
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        self.gate.open();
    }
}
