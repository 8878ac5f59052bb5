//! The data plane's threads: one single-threaded tokio runtime per worker. Each accepted client
//! connection goes to the worker with the fewest open connections and is served there start to
//! finish (client side, backend side and the backend connection pool all stay on that thread,
//! like HAProxy's and nginx's event loops).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle as ThreadHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};

/// The runtimes that serve connections and how many each serves; shared with accept loops.
#[derive(Default)]
pub(crate) struct WorkerSet {
    handles: Vec<Handle>,
    loads: Vec<AtomicUsize>,
}

/// One connection counted on a worker until dropped.
pub(crate) struct Load {
    set: Arc<WorkerSet>,
    index: usize,
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(load) = self.set.loads.get(self.index) {
            load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl WorkerSet {
    /// Runs `task` on the worker with the fewest connections (or on the current runtime when
    /// there are no workers), counting it there while it runs.
    pub fn spawn_connection<F, Fut>(self: &Arc<Self>, task: F) -> AbortHandle
    where
        F: FnOnce(Option<Load>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let least = self
            .loads
            .iter()
            .enumerate()
            .min_by_key(|(_, load)| load.load(Ordering::Relaxed))
            .map(|(index, _)| index);
        match least.and_then(|index| Some((index, self.handles.get(index)?))) {
            Some((index, handle)) => {
                if let Some(load) = self.loads.get(index) {
                    load.fetch_add(1, Ordering::Relaxed);
                }
                let load = Load {
                    set: self.clone(),
                    index,
                };
                handle.spawn(task(Some(load))).abort_handle()
            }
            None => tokio::spawn(task(None)).abort_handle(),
        }
    }
}

/// The CPUs this process may run on, if there are at least `count`.
fn allowed_cpus(count: usize) -> Option<Vec<usize>> {
    use nix::sched::{CpuSet, sched_getaffinity};
    let set = sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect();
    if cpus.len() < count {
        tracing::warn!(
            workers = count,
            cpus = cpus.len(),
            "more load balancer workers than CPUs; not pinning them"
        );
        return None;
    }
    Some(cpus)
}

/// Binds the calling thread to `cpu`; a failure is logged and the thread runs unpinned.
fn pin_current_thread(cpu: usize) {
    use nix::sched::{CpuSet, sched_setaffinity};
    let mut set = CpuSet::new();
    let pinned = set
        .set(cpu)
        .and_then(|()| sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
    if let Err(error) = pinned {
        tracing::warn!(cpu, %error, "cannot pin a load balancer worker");
    }
}

/// Where listener tasks run: dedicated worker threads, or the runtime that called
/// [`crate::Lb::apply`] when the settings ask for no workers.
pub(crate) struct Workers {
    set: Arc<WorkerSet>,
    handles: Vec<Handle>,
    /// Dropping a sender ends its worker's runtime (and every task on it).
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<ThreadHandle<()>>,
}

impl Workers {
    /// No worker threads: tasks go to the caller's runtime.
    pub fn empty() -> Workers {
        Workers {
            set: Arc::default(),
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
        }
    }

    /// Starts `count` worker threads; with 0, tasks go to the caller's runtime. With `pin`,
    /// worker *i* is bound to the *i*-th CPU the process may use, if there are enough of them.
    pub fn start(count: usize, pin: bool) -> std::io::Result<Workers> {
        let cpus = if pin { allowed_cpus(count) } else { None };
        let mut workers = Workers {
            set: Arc::default(),
            handles: Vec::with_capacity(count),
            stops: Vec::with_capacity(count),
            threads: Vec::with_capacity(count),
        };
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            workers.handles.push(runtime.handle().clone());
            workers.stops.push(stop);
            let cpu = cpus.as_ref().and_then(|cpus| cpus.get(i).copied());
            let thread = std::thread::Builder::new()
                .name(format!("ferry-lb-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        pin_current_thread(cpu);
                    }
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            workers.threads.push(thread);
        }
        workers.set = Arc::new(WorkerSet {
            handles: workers.handles.clone(),
            loads: workers
                .handles
                .iter()
                .map(|_| AtomicUsize::new(0))
                .collect(),
        });
        Ok(workers)
    }

    /// The runtimes connections are spread over.
    pub fn set(&self) -> Arc<WorkerSet> {
        self.set.clone()
    }

    /// Runs `task` on the first worker (or the current runtime when there are none).
    pub fn spawn_one<Fut>(&self, task: Fut) -> JoinHandle<()>
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        match self.handles.first() {
            Some(handle) => handle.spawn(task),
            None => tokio::spawn(task),
        }
    }

    /// Ends the worker runtimes; their remaining tasks are dropped.
    pub fn stop(&mut self) {
        self.stops.clear();
        self.handles.clear();
        self.set = Arc::default();
        // The threads exit on their own once their runtime returns; never join from async code.
        self.threads.clear();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}
