//! Waiting for Ctrl-C or SIGTERM.
//!
//! The listeners are installed when a [`Shutdown`] is made, not when it is first awaited:
//! tokio keeps a signal's handler installed once any listener asked for it, and a signal that
//! arrives while no listener exists is dropped. A command that installs its listener only
//! after printing `ready` could therefore miss a SIGTERM sent right after it (a test that
//! waited for `ready` and then sent SIGTERM saw kforward never exit, under load).

/// Ctrl-C and SIGTERM, listened for from the moment this is made.
pub struct Shutdown {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Shutdown {
    /// Starts listening for SIGINT (Ctrl-C) and SIGTERM.
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signals = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                .ok();
            Self { signals }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Resolves on the first SIGINT or SIGTERM received since [`listen`](Self::listen).
    /// Cancel-safe: dropping it loses no signal.
    pub async fn wait(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.signals {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
