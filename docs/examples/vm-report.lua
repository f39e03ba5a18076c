-- vm-report.lua: what a running VM reports about itself, over QMP.
--   maqet run docs/examples/vm-report.lua NAME
local name = maqet.args[1]
if not name then maqet.error("usage: maqet run vm-report.lua NAME", "usage") end

local vm, err = maqet.vm.get(name)
if not vm then maqet.error(err, "not_found") end
if vm.status ~= "running" then
    print(("%s is %s"):format(name, vm.status))
    return
end

local status = assert(maqet.vm.qmp(name, "query-status"))
local version = assert(maqet.vm.qmp(name, "query-version"))
local cpus = assert(maqet.vm.qmp(name, "query-cpus-fast"))
local machine = assert(maqet.vm.qmp(name, "query-target"))

print(("%s: %s, QEMU %d.%d.%d (%s), %d vCPU, pid %d, up %.1f s"):format(
    name, status.status, version.qemu.major, version.qemu.minor, version.qemu.micro,
    machine.arch, #cpus, vm.pid, vm.uptime_s or 0))
