-- inventory.lua: a small report on the state database, as a user's own automation would do it.
--   maqet run docs/examples/inventory.lua          human-readable
--   maqet run docs/examples/inventory.lua --json   machine-readable
local db = maqet.db
local as_json = maqet.args[1] == "--json"

local report = {
    maqet_version = maqet.version,
    database = db:path(),
    schema_version = db:scalar("SELECT value FROM schema_version"),
    vms = {},
    by_status = {},
}

for row in db:rows("SELECT name, status, config_data FROM vm_instances ORDER BY name") do
    local config = maqet.json.decode(row.config_data) or {}
    report.vms[#report.vms + 1] = {
        name = row.name,
        status = row.status,
        memory = config.memory,
        storage = config.storage and #config.storage or 0,
    }
    report.by_status[row.status] = (report.by_status[row.status] or 0) + 1
end

-- Ask the QEMU that VMs would run on for its version: a real process, no shell.
local qemu = maqet.process.run({ "qemu-system-x86_64", "--version" }, { timeout_ms = 5000 })
report.qemu = qemu and qemu.code == 0 and qemu.stdout:match("version ([%d%.]+)") or "not installed"

if as_json then
    print(maqet.json.encode(report))
    return
end

print(("maqet %s, schema version %d, QEMU %s"):format(report.maqet_version, report.schema_version, report.qemu))
print(("database: %s"):format(report.database))
if #report.vms == 0 then
    print("no VMs defined yet")
end
for _, vm in ipairs(report.vms) do
    print(("  %-12s %-8s memory=%-6s disks=%d"):format(vm.name, vm.status, vm.memory or "-", vm.storage))
end
