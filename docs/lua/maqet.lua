---@meta maqet
-- LuaCATS stubs for what the maqet host provides to scripts (`maqet run`) and migrations.
-- Point lua-language-server at this folder ("workspace.library") to get completion and checks.
-- Kept in step with the runtime by Tests/MaqetTests/StubsTests.swift: every function, method and
-- field declared here must exist, and everything the runtime registers must be declared here.

---@class maqet
maqet = {}

---The maqet version, e.g. "0.1.0".
---@type string
maqet.version = ""

---The script's arguments (`maqet run script.lua a b` → `{"a", "b"}`); same as `arg[1..n]`.
---Only set under `maqet run`.
---@type string[]
maqet.args = {}

---The state database (instances.db), opened and migrated before the script starts.
---Lent by maqet: `maqet.db:close()` raises. Only set under `maqet run`.
---@type maqet.Database
maqet.db = nil

---Opens (or creates) an SQLite database file.
---@param path string
---@return maqet.Database|nil db
---@return string? message   on failure: "maqet.db_open PATH: reason"
---@return string? code      on failure: "SQLITE_CANTOPEN", ...
function maqet.db_open(path) end

---Raises an error that maqet reports as one line (`maqet: MESSAGE`, no traceback) with the exit
---status named by `status`. Workflows use it for expected failures ("no VM named x" → exit 5).
---`pcall` catches it like any error: the caught value is a table `{message=, status=}` whose
---tostring is the message.
---@param message string
---@param status? "failure"|"refused"|"not_found"|"usage"|"timeout"|"interrupted"  default "failure"
function maqet.error(message, status) end

---Sleeps `ms` milliseconds. Raises when Ctrl-C or `--timeout` stops the script meanwhile.
---@param ms number  milliseconds (>= 0; fractions allowed)
function maqet.sleep(ms) end

---Seconds since the Unix epoch, as a float with sub-millisecond resolution.
---@return number
function maqet.now() end

-- ---------------------------------------------------------------------------------------------
-- maqet.db: database handles
-- ---------------------------------------------------------------------------------------------

---A database connection. Close it with `db:close()` or a `<close>` variable.
---SQL failures return `nil, message, code`; a full disk or a file that may not be written
---(SQLITE_FULL, SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_PERM) raises a `maqet.error` instead.
---@class maqet.Database
local Database = {}

---Runs one statement with bound parameters, or several statements separated by ';' (without
---parameters). Returns the number of rows changed.
---@param sql string
---@param ... string|number|boolean|nil  values for the `?` placeholders (booleans become 1/0)
---@return integer|nil changed
---@return string? message  on SQL failure: "SQLite error 1: no such table: x - while executing `…`"
---@return string? code     on SQL failure: "SQLITE_ERROR", "SQLITE_CONSTRAINT", "SQLITE_BUSY", ...
function Database:exec(sql, ...) end

---Runs a query and returns every row as a table keyed by column name (NULL columns are absent).
---@param sql string
---@param ... string|number|boolean|nil
---@return table[]|nil rows
---@return string? message
---@return string? code
function Database:query(sql, ...) end

---Iterates the rows of a query: `for row in db:rows(sql, ...) do … end`. The statement is
---finalised when the loop ends, breaks or raises.
---@param sql string
---@param ... string|number|boolean|nil
---@return fun(state: maqet.Rows): table? iterator
---@return maqet.Rows state
---@return nil
---@return maqet.Rows closing
function Database:rows(sql, ...) end

---The first column of the first row, or nil when there is no row.
---@param sql string
---@param ... string|number|boolean|nil
---@return any value
---@return string? message
---@return string? code
function Database:scalar(sql, ...) end

---Runs `fn(db)` in a transaction: BEGIN IMMEDIATE, or a SAVEPOINT when a transaction is already
---open (nesting). Commits when `fn` returns (and returns its results); rolls back and re-raises
---the error unchanged when it raises.
---@param fn fun(db: maqet.Database): ...
---@return any ...
function Database:transaction(fn) end

---Whether a table (or view) named `name` exists.
---@param name string
---@return boolean
function Database:has_table(name) end

---Whether `table` has a column named `column`.
---@param table string
---@param column string
---@return boolean
function Database:has_column(table, column) end

---The column names of `table`, in order.
---@param table string
---@return string[]
function Database:columns(table) end

---The file the connection was opened on (also after close).
---@return string
function Database:path() end

---Closes the connection; later calls raise "db:…: the maqet.database handle is closed".
---Raises for `maqet.db` and a migration's db, which maqet owns and lends to scripts.
function Database:close() end

---The running query of a `db:rows()` loop. It keeps its database alive; once that database
---is closed, the next row raises.
---@class maqet.Rows
local Rows = {}

---Finalises the statement (done automatically when the loop ends or breaks).
function Rows:close() end

-- ---------------------------------------------------------------------------------------------
-- maqet.process
-- ---------------------------------------------------------------------------------------------

---@class maqet.process
maqet.process = {}

---@class maqet.ProcessOptions
---@field cwd? string                   working directory of the child
---@field env? table<string, string|number>  the child's WHOLE environment (replaces maqet's; include PATH if the child needs it)
---@field stdin? string                 bytes written to the child's stdin (run only; otherwise stdin is /dev/null)
---@field timeout_ms? integer           run only: SIGKILL the child after this many ms
---@field stdout? "inherit"|"null"|"pipe"  spawn only (default "inherit"); "pipe" = returned by proc:wait()
---@field stderr? "inherit"|"null"|"pipe"  spawn only (default "inherit")

---@class maqet.ProcessResult
---@field code? integer         exit code (absent when killed by a signal)
---@field signal? integer       the signal that killed the child (e.g. 9)
---@field signal_name? string   its name without "SIG" (e.g. "KILL")
---@field stdout? string        captured stdout (run; spawn with stdout/stderr = "pipe")
---@field stderr? string        captured stderr
---@field timed_out? boolean    run only: true when timeout_ms expired and the child was killed

---Runs a program to completion without a shell, capturing stdout and stderr.
---`argv[1]` is searched in PATH when it has no slash. A non-zero exit is a result, not an error.
---@param argv string[]
---@param opts? maqet.ProcessOptions
---@return maqet.ProcessResult|nil result
---@return string? message  "cannot run 'x': No such file or directory"
---@return string? code     "ENOENT", "EACCES", ...
function maqet.process.run(argv, opts) end

---Starts a program without a shell and returns its handle. stdin is /dev/null; stdout and stderr
---are maqet's unless opts.stdout/opts.stderr say "null" or "pipe". Closing the handle (or the end
---of the script) kills a still-running child with SIGKILL and reaps it.
---@param argv string[]
---@param opts? maqet.ProcessOptions
---@return maqet.Process|nil proc
---@return string? message
---@return string? code
function maqet.process.spawn(argv, opts) end

---A child process started by `maqet.process.spawn`.
---@class maqet.Process
local Process = {}

---The child's process id.
---@return integer
function Process:pid() end

---Waits for the child to exit (forever without `timeout_ms`).
---@param timeout_ms? integer
---@return maqet.ProcessResult|nil result
---@return string? message  "timeout" when the child is still running after timeout_ms
---@return string? code     "ETIMEDOUT"
function Process:wait(timeout_ms) end

---Sends a signal: "TERM" (default), "KILL", "INT", "HUP", "QUIT", "USR1", "USR2", "STOP", "CONT",
---"ALRM", "WINCH" (a "SIG" prefix is accepted). Does nothing once the child has been reaped.
---@param signal_name? string
---@return boolean|nil ok
---@return string? message
---@return string? code
function Process:kill(signal_name) end

---Whether the child is still running (reaps it when it has exited).
---@return boolean
function Process:is_running() end

---Kills a still-running child with SIGKILL, reaps it and closes its pipes. Idempotent.
function Process:close() end

-- ---------------------------------------------------------------------------------------------
-- maqet.process: any process by pid (not only children), maqet.runtime_dir, maqet.runner
-- ---------------------------------------------------------------------------------------------

---@class maqet.ProcessInfo
---@field pid integer
---@field state string        one letter from /proc/PID/stat: "R", "S", "D", "Z" (zombie: it has exited), "T", ...
---@field ppid integer        parent pid
---@field pgid integer        process group (0 when its leader is outside this pid namespace)
---@field sid integer         session id (0 when its leader is outside this pid namespace)
---@field start_time integer  field 22 of /proc/PID/stat: start time in clock ticks since boot (pid + start_time name one process)
---@field cmdline string[]    the argument vector (empty for a zombie or a kernel thread)

---What /proc says about any process.
---@param pid integer
---@return maqet.ProcessInfo|nil info
---@return string? message  "no process 1234"
---@return string? code     "ESRCH"
function maqet.process.info(pid) end

---Waits until any process (not only a child) has exited: true when it has (a zombie has; a pid
---that does not exist has), false after `timeout_ms`. Uses a pidfd: no polling.
---@param pid integer
---@param timeout_ms number
---@return boolean exited
function maqet.process.wait_pid(pid, timeout_ms) end

---Sends a signal to any process: "TERM", "KILL", "INT", "HUP", ... (a "SIG" prefix is accepted).
---@param pid integer  > 0 (process groups are refused)
---@param name string
---@return boolean|nil ok
---@return string? message
---@return string? code     "ESRCH" (no such process), "EPERM" (not yours)
function maqet.process.signal(pid, name) end

---The runtime directory ($XDG_RUNTIME_DIR/maqet, else /tmp/maqet-<uid>), created 0700; with
---`vm_id`, that VM's subdirectory `<runtime dir>/<first 12 characters of vm_id>`, created 0700.
---@param vm_id? string
---@return string|nil path
---@return string? message  e.g. the directory belongs to another user
---@return string? code     "EPERM", "ENOTDIR", "ENAMETOOLONG", ...
function maqet.runtime_dir(vm_id) end

---@class maqet.runner
maqet.runner = {}

---@class maqet.RunnerSpec
---@field vm_name string
---@field vm_id string         the vm_instances.id the runner updates
---@field argv string[]        QEMU's whole argv, binary first, with both monitors in it
---@field dir string           the VM's runtime directory (maqet.runtime_dir(vm_id))
---@field runner_qmp string    the socket of the runner's own monitor
---@field client_qmp string    the socket of the monitor for the CLI/scripts (recorded as qmp_socket_path)
---@field timeout_ms? integer  how long QEMU may take until QMP answers (default 30000)
---@field no_wait? boolean     return right after starting the runner (status "starting")
---@field qemu_log? string     QEMU's stdout/stderr (default <dir>/qemu.log)
---@field runner_log? string   the runner's stderr (default <dir>/runner.log)
---@field history_log? string  the VM's history log (qemu.paths(row).history_log); none when absent
---@field events_log? string   the VM's events log (qemu.paths(row).events_log); none when absent
---@field lock? string         the VM's lock file (qemu.paths(row).lock), held by this process (maqet.runner.lock): the runner gets it
---@field claim_pid? integer   the runner_pid the row was claimed with (status starting): the runner's writes are compare-and-set on it

---@class maqet.RunnerLaunch
---@field pid? integer        QEMU's pid (absent with no_wait)
---@field runner_pid integer
---@field status "running"|"starting"

---Starts the VM's detached runner (its own session), which starts QEMU, records the row as
---running once QMP answers `query-status`, and records stopped/crashed when QEMU ends.
---@param spec maqet.RunnerSpec
---@return maqet.RunnerLaunch|nil result
---@return string? message  "QEMU exited during start: <QEMU's stderr>", ...
---@return string? code     "EQEMU", "ETIMEDOUT", "ENOENT", "ERUNNER", "ENAMETOOLONG", ...
function maqet.runner.launch(spec) end

---Takes the VM's lock (an exclusive flock on `path`; the file is created 0600 in a 0700 folder)
---without blocking. True when this process now holds it (also when it already did).
---@param path string absolute path of the lock file (qemu.paths(row).lock)
---@return true|nil ok
---@return string? message  "… held by another process (the VM's start, runner or QEMU is alive)"
---@return string? code     "EBUSY" (held by another process), "EPERM", "ENOTDIR", ...
function maqet.runner.lock(path) end

---Lets go of a lock this process holds (a runner it was handed to keeps holding it).
---@param path string
---@return boolean held whether this process held it
function maqet.runner.unlock(path) end

---Tests the VM's lock: "free" (no start, runner or QEMU of the VM lives), "held" (another process
---holds it) or "mine" (this process holds it). Never creates the file.
---@param path string
---@return "free"|"held"|"mine"|nil state
---@return string? message
---@return string? code
function maqet.runner.lock_state(path) end

-- ---------------------------------------------------------------------------------------------
-- maqet.json
-- ---------------------------------------------------------------------------------------------

---@class maqet.json
maqet.json = {}

---The value JSON `null` decodes to (a light userdata); encode writes it as `null`.
---@type lightuserdata
maqet.json.null = nil

---@class maqet.JSONEncodeOptions
---@field indent? integer  pretty-print with this many spaces per level (0-16)

---Encodes a value as JSON. Tables with keys exactly 1..n are arrays; other tables are objects with
---sorted keys (number keys become strings); an empty table is `{}` unless marked with
---`maqet.json.array`. Integers stay integers; floats are written so they read back identical.
---Raises (naming maqet.json.encode) for functions, userdata, cycles, NaN/infinity, boolean keys,
---invalid UTF-8.
---@param value any
---@param opts? maqet.JSONEncodeOptions
---@return string
function maqet.json.encode(value, opts) end

---Decodes JSON text (RFC 8259). Arrays come back marked as arrays (so `[]` re-encodes as `[]`);
---`null` becomes `maqet.json.null`.
---With `opts.ordered`, each object's metatable `__keys` lists its keys in the text's order.
---@param text string
---@param opts? {ordered?: boolean}
---@return any|nil value
---@return string? message  "maqet.json.decode: unexpected '}' at line 1 column 9"
---@return string? code     "EJSON"
function maqet.json.decode(text, opts) end

---Marks `t` (or a new empty table) as a JSON array and returns it.
---@param t? table
---@return table
function maqet.json.array(t) end

-- ---------------------------------------------------------------------------------------------
-- maqet.log
-- ---------------------------------------------------------------------------------------------

---@class maqet.log
maqet.log = {}

---`maqet: debug: msg` on stderr, shown with -vv.
---@param msg string|number
function maqet.log.debug(msg) end

---`maqet: info: msg` on stderr, shown with -v or -vv.
---@param msg string|number
function maqet.log.info(msg) end

---`maqet: warning: msg` on stderr, shown unless -q.
---@param msg string|number
function maqet.log.warn(msg) end

---`maqet: error: msg` on stderr, always shown.
---@param msg string|number
function maqet.log.error(msg) end

-- ---------------------------------------------------------------------------------------------
-- maqet.qmp
-- ---------------------------------------------------------------------------------------------

---@class maqet.qmp
maqet.qmp = {}

---@class maqet.QMPConnectOptions
---@field timeout_ms? integer  how long connecting, the greeting and qmp_capabilities may take together (default 5000)

---@class maqet.QMPExecuteOptions
---@field timeout_ms? integer  how long to wait for the reply (default: the connect timeout_ms)

---@class maqet.QMPEvent
---@field event string       the event name, e.g. "STOP", "SHUTDOWN"
---@field data table         the event's data ({} when it has none)
---@field timestamp number   QEMU's timestamp in seconds since the Unix epoch (with microseconds)

---Connects to a QMP monitor socket, reads the greeting and negotiates capabilities.
---@param path string  the Unix socket (at most 107 bytes)
---@param opts? maqet.QMPConnectOptions
---@return maqet.QMP|nil conn
---@return string? message  "connect /x.sock: No such file or directory"
---@return string? code     "ENOENT", "ECONNREFUSED", "ENAMETOOLONG", "ETIMEDOUT", "EPROTO", ...
function maqet.qmp.connect(path, opts) end

---A QMP connection. Close it with `conn:close()` or a `<close>` variable; QEMU keeps running.
---@class maqet.QMP
local QMP = {}

---Runs a QMP command and returns its "return" value as Lua values (objects and arrays are tables,
---null is maqet.json.null). Events that arrive meanwhile are kept for `conn:next_event()`.
---`quit` returns {} also when QEMU closes the socket before answering.
---@param command string  the QMP command name, e.g. "query-status"
---@param args? table     the command's arguments (a table of named values)
---@param opts? maqet.QMPExecuteOptions
---@return any|nil result
---@return string? message  QMP error: its "desc"; transport failure: what went wrong
---@return string? code     QMP error: its class ("GenericError", "CommandNotFound", ...); else "ETIMEDOUT", "EPIPE", "EPROTO"
function QMP:execute(command, args, opts) end

---The next event, oldest first: one already received, or the next to arrive.
---Without `timeout_ms` it waits forever.
---@param timeout_ms? integer
---@return maqet.QMPEvent|nil event
---@return string? message  when no event arrived in time, or QEMU closed the connection
---@return string? code     "ETIMEDOUT", "EPIPE"
function QMP:next_event(timeout_ms) end

---The "QMP" member of QEMU's greeting: `{version = {qemu = {major=, minor=, micro=}, package=}, capabilities = {...}}`.
---@return table
function QMP:greeting() end

---Closes the connection (QEMU keeps running). Idempotent.
function QMP:close() end

-- ---------------------------------------------------------------------------------------------
-- maqet.vm (lifecycle; implemented in Lua: scripts/lib/vm.lua)
-- ---------------------------------------------------------------------------------------------

---@class maqet.vm
maqet.vm = {}

---A VM row of vm_instances with its true status (see docs/lifecycle.md).
---@class maqet.VM
---@field id string
---@field name string
---@field status string          "created", "running", "starting", "stopped", "crashed", ...
---@field pid? integer           QEMU's pid while running
---@field runner_pid? integer    the per-VM runner's pid while running
---@field qmp_socket_path? string the client QMP monitor while running
---@field config_data? string    the stored config (JSON text)
---@field alive boolean          QEMU is really running (checked against /proc)
---@field runner_missing? boolean QEMU runs but its runner is gone
---@field runner_kind? "python-maqet" QEMU runs under the published (Python) maqet's runner (runner_missing is false then)
---@field uptime_s? number       (get only) seconds QEMU has been running
---@field config? table          (get only) config_data decoded
---@field last_log? string       (get only) last line of <datadir>/logs/NAME.log

---@class maqet.VMStartOptions
---@field timeout_s? number  how long QMP may take to answer (default 30)
---@field no_wait? boolean   return once the runner is launched

---@class maqet.VMStopOptions
---@field timeout_s? number  how long to wait for the guest to power off (default 30)
---@field powerdown_interval_s? number  seconds between repeated system_powerdowns (default 2)
---@field force? boolean     SIGKILL at once

---Every VM sorted by name, each checked against its real processes (dead VMs are recorded).
---@return maqet.VM[]
function maqet.vm.list() end

---One VM with its live status. `name` may also be the VM's id or a unique id prefix (>= 4 characters).
---@param name string
---@return maqet.VM|nil vm
---@return string? message "no VM named 'x' (see 'maqet ls')"
---@return string? code    "ENOVM", "EAMBIGUOUS" (an id prefix several VMs share)
function maqet.vm.get(name) end

---Starts a VM through its runner; returns once QMP answers (unless no_wait).
---@param name string
---@param opts? maqet.VMStartOptions
---@return {id: string, name: string, status: string, pid?: integer, runner_pid: integer, qmp_socket_path: string}|nil result
---@return string? message QEMU's own message for EQEMU
---@return string? code    "ENOVM", "EBUSY" (already running), "EQEMU", "ETIMEDOUT", "ENOENT" (no binary), ...
function maqet.vm.start(name, opts) end

---Stops a VM: system_powerdown every powerdown_interval_s until QEMU exits or timeout_s passes,
---then quit, SIGTERM, SIGKILL (force: SIGKILL at once). A VM still starting is waited for first.
---Stopping a VM that is not running returns a result with `was_running = false`.
---@param name string
---@param opts? maqet.VMStopOptions
---@return {id: string, name: string, status: string, stopped_by?: "powerdown"|"quit"|"SIGTERM"|"SIGKILL", was_running: boolean, powerdowns?: integer, start_failed?: boolean}|nil result
---@return string? message
---@return string? code    "ENOVM", "ESTOP" (QEMU would not exit), "EBUSY" (still starting after timeout_s)
function maqet.vm.stop(name, opts) end

---Runs one QMP command on a running VM's client monitor (connect, execute, close; 5 s timeout).
---@param name string
---@param command string  e.g. "query-status"
---@param args? table
---@return any|nil result  QEMU's return value
---@return string? message
---@return string? code    "ENOVM", "ENOTRUNNING", a QMP error class, "ETIMEDOUT", ...
function maqet.vm.qmp(name, command, args) end

---@class maqet.VMSnapshotOptions
---@field timeout_s? number  how long a running VM's QMP snapshot job may take (default 120)

---One snapshot of `maqet.vm.snapshot(name, "list")` (see docs/snapshots.md).
---@class maqet.VMSnapshot
---@field name string
---@field state "ok"|"partial"|"missing"|"unrecorded"  on every disk and recorded / on some disks / recorded but on no disk / on the disks but not recorded
---@field recorded boolean      maqet took it (a vm_snapshots row)
---@field live boolean          the VM's state (RAM, devices) was saved too
---@field created_at string   UTC "YYYY-MM-DD HH:MM:SS" (maqet.json.null when unknown)
---@field vm_state_size integer bytes of saved VM state (0: disks only)
---@field disks {file: string, present: boolean}[]

---Creates, lists, loads or deletes snapshots of a VM (scripts/lib/snapshot.lua): `qemu-img
---snapshot` on every writable qcow2 disk of a stopped VM (all disks or none), QMP
---snapshot-save/-load/-delete jobs (VM state plus disks) on a running one. `snap` is required
---for load and delete; create without it names the snapshot snap-YYYYMMDD-HHMMSS (UTC).
---Results: create `{name, snapshot, live, disks, vm_state_size}`; list `{name, running, disks,
---snapshots: maqet.VMSnapshot[], unreadable}`; load `{name, snapshot, live, disks}`; delete
---`{name, snapshot, live, disks, record}`. A misspelt action raises.
---@param name string
---@param action "create"|"list"|"load"|"delete"
---@param snap? string
---@param opts? maqet.VMSnapshotOptions
---@return table|nil result
---@return string? message
---@return string? code    "ENOVM", "EINVAL" (bad name), "EEXIST", "ENOSNAP", "EREFUSED" (raw disk, no qcow2 disk, disk-only snapshot on a running VM), "EBUSY", "ETIMEDOUT", "EFAIL"
function maqet.vm.snapshot(name, action, snap, opts) end

---The console of a VM (scripts/lib/console.lua): its console log as an append-only byte stream
---with absolute offsets, and typing through its console socket. See docs/console.md.
---@class maqet.VMConsole
---@field name string
---@field mark fun(self: maqet.VMConsole): integer  the current end of the console log
---@field boot_offset fun(self: maqet.VMConsole): integer  where the current (or last) boot began in the log
---@field expect fun(self: maqet.VMConsole, pattern: string, opts?: maqet.ConsoleExpectOptions): string|nil, integer|string, integer|string|nil  match, offset after it, its start offset; or nil, message, "ETIMEDOUT"|"ESTOPPED"
---@field send fun(self: maqet.VMConsole, text: string): true|nil, string?, string?  types text; nil, message, "EBUSY" (someone is attached) or "ENOTRUNNING"
---@field read fun(self: maqet.VMConsole, from?: integer, to?: integer): string  the log's bytes [from, to)
---@field attached fun(self: maqet.VMConsole): integer?  pid of the `maqet console` attached, or nil
---@field close fun(self: maqet.VMConsole)  nothing to release (for `<close>`)

---@class maqet.ConsoleExpectOptions
---@field from? integer        offset to search from (default: where the current boot began)
---@field timeout_ms? integer  default 30000
---@field syntax? "ere"|"lua"|"plain"  pattern syntax (default "ere": POSIX extended regex)

---The console of VM `name` (nothing is opened: each call reads the log or connects afresh).
---@param name string
---@return maqet.VMConsole|nil console
---@return string? message
---@return string? code    "ENOVM", "ENOCONSOLE" (the VM's config has its own serial line)
function maqet.vm.console(name) end

---@class maqet.VMWaitOptions
---@field state? "running"|"paused"|"stopped"|"crashed"  stopped = not active (stopped, crashed, never started)
---@field console? string      a pattern the console must print since the current boot began
---@field syntax? "ere"|"lua"|"plain"  the console pattern's syntax (default "ere")
---@field from? integer        console: search from this offset instead
---@field timeout_ms? integer  no limit when absent

---Waits until the VM reaches `opts.state`, or its console prints `opts.console`.
---@param name string
---@param opts maqet.VMWaitOptions
---@return {name: string, status: string, match?: string, offset?: integer, start?: integer}|nil result
---@return string? message
---@return string? code    "ENOVM", "ETIMEDOUT", "EINVAL" (bad state or pattern), "ENOCONSOLE", "ESTOPPED" (stopped before the console printed it)
function maqet.vm.wait(name, opts) end

---@class maqet.VMEvent
---@field time string           "2026-11-25T09:12:03.456Z"
---@field vm string
---@field id string
---@field event string          a QMP event name ("STOP", "RESUME", ...) or "state"
---@field data? table           a QMP event's data
---@field status? string        "state": the new status
---@field reason? string        "state": why
---@field unreadable? true      the line is not a JSON object

---@class maqet.VMEventsOptions
---@field from? "end"|"start"   "end" (default): only entries written from now on
---@field timeout_ms? number    for the whole iteration; no end when absent
---@field poll_ms? integer      how often the logs are looked at (default 100)

---Follows the events logs of the VMs `names` (nil or {}: every VM, and VMs added later): an
---iterator over their entries (the decoded entry and its JSON line), nil once opts.timeout_ms passed.
---@param names? string[]
---@param opts? maqet.VMEventsOptions
---@return (fun(): maqet.VMEvent?, string?)|nil iterator
---@return string? message
---@return string? code    "ENOVM"
function maqet.vm.events(names, opts) end

-- ---------------------------------------------------------------------------------------------
-- maqet.console, maqet.regex (the serial console's mechanism)
-- ---------------------------------------------------------------------------------------------

---@class maqet.console
maqet.console = {}

---Types `text` into a guest through its console socket, holding the attach lock meanwhile, and
---returns once QEMU has read it all. Paths come from qemu.paths(row) (console_sock, console_lock).
---@param socket string
---@param text string
---@param opts {lock: string, timeout_ms?: integer}  timeout_ms default 5000
---@return true|nil ok
---@return string? message "the console is already attached (pid N)"
---@return string? code    "EBUSY", "ETIMEDOUT", "ENOENT" (no socket), "ECONNREFUSED", ...
function maqet.console.send(socket, text, opts) end

---The pid holding a console's attach lock (0 when it wrote none yet), or nil when nobody does.
---@param lock string
---@return integer?
function maqet.console.holder(lock) end

---@class maqet.regex
maqet.regex = {}

---Compiles a POSIX extended regular expression (REG_EXTENDED | REG_NEWLINE), matched on bytes.
---@param pattern string
---@return maqet.Regex|nil re
---@return string? message "invalid regular expression '(': Unmatched ( or \("
---@return string? code    "EREGEX"
function maqet.regex.compile(pattern) end

---@class maqet.Regex
local Regex = {}

---The first match at or after byte `init` (default 1): start and end, 1-based and inclusive like
---string.find; nil when there is none. NUL bytes are ordinary bytes.
---@param subject string
---@param init? integer
---@return integer? start
---@return integer? end_
function Regex:find(subject, init) end

---Frees the compiled expression. Idempotent.
function Regex:close() end

---@class maqet.VMControlResult
---@field name string
---@field status string  "paused", "running", or the unchanged status after reset

---Pauses a running VM (QMP stop); returns once the row says paused.
---@param name string
---@return maqet.VMControlResult|nil result
---@return string? message
---@return string? code    "ENOVM", "ENOTRUNNING", "EPAUSED", a QMP error class
function maqet.vm.pause(name) end

---Resumes a paused VM (QMP cont); returns once the row says running.
---@param name string
---@return maqet.VMControlResult|nil result
---@return string? message
---@return string? code    "ENOVM", "ENOTRUNNING", "ENOTPAUSED", "EPANICKED", a QMP error class
function maqet.vm.resume(name) end

---Hard reset (QMP system_reset) of a running or paused VM; the status is unchanged.
---@param name string
---@return maqet.VMControlResult|nil result
---@return string? message
---@return string? code    "ENOVM", "ENOTRUNNING", a QMP error class
function maqet.vm.reset(name) end

-- ---------------------------------------------------------------------------------------------
-- maqet.yaml, maqet.fs, maqet.backup_state (VM definitions)
-- ---------------------------------------------------------------------------------------------

---@class maqet.yaml
maqet.yaml = {}

---Decodes one YAML document with the YAML 1.2 core schema: mappings become tables, sequences
---tables marked as arrays (so `[]` re-encodes as `[]`), `null`/`~`/empty `maqet.json.null`,
---`true`/`false` booleans, `12`/`0x1f`/`0o17` integers, `1.5`/`.inf`/`.nan` floats; everything
---else (also `yes`, `no`, `on`, `off`) and every quoted scalar a string. Anchors and aliases are
---resolved and merge keys (`<<: *base`) merged. An empty document is `maqet.json.null`. Each
---mapping's own metatable lists its keys in document order: `getmetatable(t).__keys`.
---@param text string
---@return any|nil value
---@return string? message  "maqet.yaml.decode: did not find expected key at line 3 column 1"
---@return string? code     "EYAML"
function maqet.yaml.decode(text) end

---Reads and decodes a YAML file (as `maqet.yaml.decode`).
---@param path string
---@return any|nil value
---@return string? message  "maqet.yaml.load_file PATH: No such file or directory", "maqet.yaml.load_file PATH: … at line L column C"
---@return string? code     "ENOENT", "EACCES", "EISDIR", "EYAML", ...
function maqet.yaml.load_file(path) end

---@class maqet.fs
maqet.fs = {}

---@class maqet.FileInfo
---@field type "file"|"directory"|"socket"|"fifo"|"device"  (symlinks are followed)
---@field size integer       bytes
---@field mode integer       permission bits (0755 = 493)
---@field executable boolean  whether this process may execute it (access X_OK)
---@field readable boolean    whether this process may read it (access R_OK)

---Information about a file (`stat` and `access`), following symlinks.
---@param path string
---@return maqet.FileInfo|nil info
---@return string? message  "maqet.fs.stat PATH: No such file or directory"
---@return string? code     "ENOENT", "EACCES", "ENOTDIR", ...
function maqet.fs.stat(path) end

---The absolute path with `.`, `..` and symlinks resolved; the part that does not exist yet is
---appended as written (so a disk still to be created resolves too). Relative paths start at the
---current directory.
---@param path string
---@return string
function maqet.fs.realpath(path) end

---The first executable regular file called `name` in `$PATH`; a name containing `/` is checked as it is.
---@param name string
---@return string|nil path
---@return string? message  "maqet.fs.which: qemu-system-x86_64 not found in PATH"
---@return string? code     "ENOENT", "EACCES"
function maqet.fs.which(name) end

---The current directory.
---@return string
function maqet.fs.cwd() end

---The names in a directory (without `.` and `..`), sorted.
---@param dir string
---@return string[]|nil names
---@return string? message  "maqet.fs.list DIR: No such file or directory"
---@return string? code     "ENOENT", "EACCES", "ENOTDIR", ...
function maqet.fs.list(dir) end

---@class maqet.FsSpace
---@field free_bytes integer       free bytes on the file system
---@field available_bytes integer  what an unprivileged user may still write
---@field total_bytes integer      the file system's size

---The space of the file system holding `path` (`statvfs`).
---@param path string
---@return maqet.FsSpace|nil space
---@return string? message  "maqet.fs.space PATH: No such file or directory"
---@return string? code     "ENOENT", "EACCES", ...
function maqet.fs.space(path) end

---Takes an automatic, verified backup of the state database beside it
---(`instances.db.backup-YYYYMMDD-HHMMSS`, pruned to the newest `$MAQET_KEEP_BACKUPS`, default 5)
---and returns its path. Destructive workflows (apply, rm) call it first, so `maqet db restore`
---undoes them. It copies what is committed: call it before `db:transaction`, not inside one.
---@return string|nil path
---@return string? message  "maqet.backup_state: …"
---@return string? code     "ENOSTATE" (no state database opened), "EBACKUP"
function maqet.backup_state() end

---The data directory the command resolved (holds instances.db and logs/).
---@return string|nil path
---@return string? message
---@return string? code  "ENOSTATE"
function maqet.data_dir() end

-- ---------------------------------------------------------------------------------------------
-- maqet.history: the one writer of a VM's history log and events log
-- ---------------------------------------------------------------------------------------------

---@class maqet.history
maqet.history = {}

---Appends "<UTC timestamp with ms> <message>" to a history log (0600, created as needed).
---@param path string  absolute, e.g. qemu.paths(row).history_log
---@param message string
---@return true|nil ok
---@return string? message
---@return string? code  "EIO"
function maqet.history.append(path, message) end

---Appends one JSON line: "time" first, then vm, id, event, then the other keys sorted.
---@param path string  absolute, e.g. qemu.paths(row).events_log
---@param record table {vm=, id=, event=, ...}
---@return true|nil ok
---@return string? message
---@return string? code  "EIO"
function maqet.history.event(path, record) end

---Renames the file to path .. ".1" when it is larger than max_bytes: true; false when there was
---nothing to do; nil, message, "EIO" when the rename failed.
---@param path string
---@param max_bytes integer
---@return boolean|nil rotated
---@return string? message
---@return string? code  "EIO"
function maqet.history.rotate(path, max_bytes) end
