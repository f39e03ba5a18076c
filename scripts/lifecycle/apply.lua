-- scripts/lifecycle/apply.lua: `maqet apply NAME [CONFIG.yaml ...] [--vm-config FILE ...] [--memory M] [--cpu N]
-- [--binary PATH] [--enable-kvm]`
-- Changes a stopped VM's config: the stored config, then the files in order, then the flags, are
-- merged and validated. Creates the VM when there is none. Refused while the VM runs. Takes an
-- automatic backup of the state database first, so `maqet db restore` undoes it.
local config = require("maqet.lib.config")
local status = require("maqet.lib.status")
local vm = require("maqet.lib.vm")

local null = maqet.json.null

--- Top-level keys whose value differs between `old` and `new`, sorted, with both values.
local function changes(old, new)
    local keys, seen = {}, {}
    for k in pairs(old) do if not seen[k] then seen[k] = true; keys[#keys + 1] = k end end
    for k in pairs(new) do if not seen[k] then seen[k] = true; keys[#keys + 1] = k end end
    table.sort(keys)
    local out = maqet.json.array()
    for _, k in ipairs(keys) do
        local a = old[k] == nil and null or old[k]
        local b = new[k] == nil and null or new[k]
        if maqet.json.encode(a) ~= maqet.json.encode(b) then
            out[#out + 1] = { key = k, old = a, new = b }
        end
    end
    return out
end

return {
    description = "Change a stopped VM's config (create it when missing); backs up the state first",

    ---@param args {name: string, files: string[]?, memory: (string|integer)?, cpu: integer?, binary: string?, enable_kvm: boolean?}
    run = function(args)
        local db = maqet.db
        local name = args.name
        -- An existing VM may be named by its id or an id prefix (lib/vm.lua); a name that matches
        -- nothing creates a VM of that name.
        local found, missing, missing_code = vm.resolve(name)
        if found then name = found.name elseif missing_code == "EAMBIGUOUS" then maqet.error(missing, "usage") end
        local ok, reason = config.name_ok(name)
        if not ok then maqet.error(reason, "usage") end

        local row, stored = config.stored(db, name)
        if row and status.is_active(row.status) then
            maqet.error(("VM '%s' is %s; stop it first (maqet stop %s), then apply the change"):format(name, row.status, name), "failure")
        end

        local files = args.files or {}
        local overlay, origins = config.load_files(files)
        if overlay.name ~= nil and overlay.name ~= name then
            maqet.log.warn(("%s: name: '%s' ignored; apply keeps the VM's name '%s'"):format(
                origins.name or "config", tostring(overlay.name), name))
        end
        overlay.name = nil
        local flags = {}
        if args.memory ~= nil and args.memory ~= null then flags.memory = args.memory; origins.memory = "--memory" end
        if args.cpu ~= nil and args.cpu ~= null then flags.cpu = args.cpu; origins.cpu = "--cpu" end
        if args.binary ~= nil and args.binary ~= null then flags.binary = args.binary; origins.binary = "--binary" end
        -- --enable-kvm asks for KVM the way a config does: an `accel: kvm` argument (it replaces an
        -- earlier accel item; lib/qemu.lua adds the TCG fallback where /dev/kvm is missing).
        if args.enable_kvm == true then
            flags.arguments = maqet.json.array({ { accel = "kvm" } })
            origins["arguments:accel"] = "--enable-kvm"
        end

        local old = stored or {}
        -- A bad value is reported against where it came from: "--memory: memory: ..." or "FILE: cpu: ...".
        local cfg = config.validate(config.merge(config.merge(old, overlay), flags), origins)
        local id = row and row.id or config.new_id()
        config.scratch_files(cfg, id) -- storage with a size and no file: an image in the data dir
        local diff = changes(old, cfg)

        if row and #diff == 0 then
            return { id = row.id, name = name, created = false, changes = diff, backup = null }
        end

        local backup = null
        if row then
            local path, message = maqet.backup_state()
            if not path then maqet.error(("not changed: the backup before apply failed: %s"):format(message)) end
            backup = path
        end

        local id = row and row.id or config.new_id()
        db:transaction(function(tx)
            if row then
                local n = assert(tx:exec(
                    "UPDATE vm_instances SET config_data = ? WHERE name = ? AND status != 'running'",
                    config.encode(cfg), name))
                if n == 0 then
                    maqet.error(("VM '%s' started or was removed meanwhile; nothing was changed"):format(name), "failure")
                end
            else
                assert(tx:exec([[INSERT INTO vm_instances (id, name, config_path, config_data, status)
                                 VALUES (?, ?, ?, ?, 'created')]],
                    id, name,
                    files[1] and config.absolute(files[1], maqet.fs.cwd()) or nil, config.encode(cfg)))
            end
        end)
        return { id = id, name = name, created = row == nil, changes = diff, backup = backup }
    end,
}
