-- scripts/lib/inspect.lua: what `maqet info` and `maqet inspect` report about a VM: the config
-- summary the published maqet printed (`configuration`) and, for a running VM, its QEMU process
-- as /proc tells it (CPU %, memory, start time, command line).
local qemu = require("maqet.lib.qemu")
local vm = require("maqet.lib.vm")
local read_file = require("maqet.lib.files").read

local inspect = {}

--- Clock ticks per second of /proc/PID/stat's times (USER_HZ; 100 on every Linux maqet runs on).
inspect.ticks_per_s = 100

local null = maqet.json.null

--- The published maqet's `configuration` block: binary, memory, cpu, display, storage_count,
--- storage_devices [{name, type, size}]. Values the config leaves out are what a start uses
--- (lib/qemu.lua's defaults) for binary and display, null for memory and cpu (QEMU's own default).
---@param config table the VM's decoded config
function inspect.configuration(config)
    local devices = {}
    for i, disk in ipairs(type(config.storage) == "table" and config.storage or {}) do
        if type(disk) == "table" then
            devices[#devices + 1] = {
                name = disk.name or ("storage" .. i),
                type = disk.type or null,
                size = disk.size or null,
            }
        end
    end
    return {
        binary = config.binary or qemu.default_binary,
        memory = config.memory or null,
        cpu = config.cpu or null,
        display = config.display or qemu.default_display,
        storage_count = #devices,
        storage_devices = maqet.json.array(devices),
    }
end

--- `maqet info`: the VM's identity and config (no process is looked at beyond the reconcile).
---@param row table a row from vm.get
function inspect.info(row)
    local config = row.config or {}
    return {
        vm_id = row.id,
        name = row.name,
        config_path = row.config_path or null,
        config = config,
        configuration = inspect.configuration(config),
    }
end

--- Seconds since boot, from /proc/uptime.
local function since_boot_s()
    return tonumber((read_file("/proc/uptime") or ""):match("^(%S+)"))
end

--- The wall-clock time (Unix seconds) the machine booted, from /proc/stat's btime.
local function boot_time()
    return tonumber((read_file("/proc/stat") or ""):match("\nbtime (%d+)"))
end

--- A Unix time as ISO 8601 UTC ("2026-12-01T22:52:01Z").
function inspect.iso_utc(t)
    return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t))
end

--- What /proc says about a live process: {pid, state, cpu_percent (CPU time over its whole
--- life: (utime + stime) / age, 100 = one core busy all the time), cpu_seconds, rss_bytes,
--- vms_bytes, start_time (ISO UTC), uptime_s, cmdline}, or nil when it is gone.
---@param pid integer
function inspect.process(pid)
    local info = pid and vm.process_info(pid)
    if not info or info.state == "Z" then return nil end
    local stat = read_file("/proc/" .. pid .. "/stat") or ""
    local after = stat:match("%) (.*)$") or ""
    local fields = {}
    for word in after:gmatch("%S+") do fields[#fields + 1] = word end
    -- fields[1] is /proc/PID/stat's field 3 (state): field N is fields[N - 2].
    local utime, stime = tonumber(fields[12]) or 0, tonumber(fields[13]) or 0
    local vsize = tonumber(fields[21])
    local status = read_file("/proc/" .. pid .. "/status") or ""
    local rss_kb = tonumber(status:match("\nVmRSS:%s*(%d+) kB"))
    local cpu_s = (utime + stime) / inspect.ticks_per_s
    local up = since_boot_s()
    local age = up and info.start_time and (up - info.start_time / inspect.ticks_per_s) or nil
    local boot = boot_time()
    local result = {
        pid = pid,
        state = info.state,
        cpu_seconds = cpu_s,
        cpu_percent = (age and age > 0) and math.floor(cpu_s / age * 1000 + 0.5) / 10 or null,
        rss_bytes = rss_kb and rss_kb * 1024 or null,
        vms_bytes = vsize or null,
        start_time = (boot and info.start_time) and inspect.iso_utc(boot + info.start_time / inspect.ticks_per_s) or null,
        uptime_s = age and math.floor(age) or null,
        cmdline = maqet.json.array(info.cmdline or {}),
    }
    return result
end

--- Who runs the VM, in `maqet status`'s words: "running" (maqet's runner), "missing" (QEMU runs
--- without a runner), "python-maqet" (the published maqet's runner), or nil when no QEMU runs.
function inspect.runner(row)
    if not vm.ACTIVE[row.status] then return nil end
    if row.runner_kind == "python-maqet" then return "python-maqet" end
    return row.runner_missing and "missing" or "running"
end

--- `maqet inspect`: info plus status, pids, sockets, times and, when QEMU runs, its process.
---@param row table a row from vm.get
function inspect.inspect(row)
    local out = inspect.info(row)
    local runner = inspect.runner(row)
    out.status = row.status
    out.is_running = row.alive or false
    out.pid = row.pid or null
    out.runner_pid = row.runner_pid or null
    out.runner = runner or null
    out.qmp_socket_path = row.qmp_socket_path or null
    out.socket_path = row.socket_path or null
    out.created_at = row.created_at or null
    out.updated_at = row.updated_at or null
    out.last_log = row.last_log or null
    out.process = (row.alive and inspect.process(row.pid)) or null
    return out
end

return inspect
