-- maqet doctor [--fix]: checks what maqet needs, one check per line:
--   database      PRAGMA quick_check of instances.db says ok
--   schema        the schema version (opening the database migrated it already; a newer one is
--                 refused before doctor runs)
--   vms           rows whose recorded state was not true (reconciled now, as `ls` does) and
--                 orphan QEMUs (their runner gone); --fix ends the orphans (= cleanup --force)
--   runtime_files stale runtime directories, lock files, the published maqet's leftovers;
--                 --fix removes them (= cleanup --force)
--   qemu, qemu_img  the programs are on PATH (and their versions)
--   kvm           /dev/kvm can be opened (a warning when not: VMs then run under TCG, slower)
--   runtime_dir   the runtime directory is ours and mode 0700
--   disk_space    the data directory's file system has doctor.low_space_bytes free
-- A failed check is an error (exit 1) or a warning (exit 0); the result is
-- {checks = [{name, ok, severity, detail}], errors = [...], warnings = [...], fixed = n}.
local cleanup = require("maqet.lib.cleanup")
local qemu = require("maqet.lib.qemu")

local doctor = {
    --- Less free space than this in the data directory is a warning.
    low_space_bytes = 1024 * 1024 * 1024,
}

--- The first line of `program --version`, or nil and why not.
local function version_of(program)
    local path, err = maqet.fs.which(program)
    if not path then return nil, err end
    local r, message = maqet.process.run({ path, "--version" }, { timeout_ms = 10000 })
    if not r then return nil, message end
    if r.code ~= 0 then return nil, ("%s --version exited with %s"):format(path, tostring(r.code or r.signal_name)) end
    return path, (r.stdout:match("^[^\n]*") or "")
end

local function mib(bytes) return ("%.0f MiB"):format(bytes / (1024 * 1024)) end

return {
    description = "Check the database, stale VMs and files, QEMU, KVM, the runtime directory and disk space",
    run = function(args)
        local checks, errors, warnings = maqet.json.array(), maqet.json.array(), maqet.json.array()
        local function check(name, ok, detail, severity)
            severity = ok and "ok" or (severity or "error")
            checks[#checks + 1] = { name = name, ok = ok, severity = severity, detail = detail }
            if severity == "error" then errors[#errors + 1] = name .. ": " .. detail end
            if severity == "warning" then warnings[#warnings + 1] = name .. ": " .. detail end
        end

        local ok, rows = pcall(function() return assert(maqet.db:query("PRAGMA quick_check")) end)
        local verdict = ok and rows[1] and rows[1].quick_check
        check("database", verdict == "ok", ok and ("quick_check: " .. tostring(verdict)) or tostring(rows))
        local version = maqet.db:scalar("SELECT value FROM schema_version")
        check("schema", version ~= nil, ("schema version %s"):format(tostring(version)))

        local plan = cleanup.plan()
        local fixed = 0
        if args.fix and cleanup.count(plan) > 0 then
            plan = cleanup.apply(plan)
            fixed = plan.cleaned
        end
        local function left(list)
            local n = 0
            for _, item in ipairs(list) do if not item.done then n = n + 1 end end
            return n
        end
        local orphans = left(plan.orphans)
        local recorded = #plan.reconciled
        local vm_detail = ("%d row%s recorded as it really is now"):format(recorded, recorded == 1 and "" or "s")
        if orphans > 0 then
            vm_detail = vm_detail .. ("; %d orphan QEMU%s (its runner is gone): 'maqet doctor --fix' or 'maqet cleanup' ends them"):format(
                orphans, orphans == 1 and "" or "s")
        elseif #plan.orphans > 0 then
            vm_detail = vm_detail .. ("; ended %d orphan QEMU%s"):format(#plan.orphans, #plan.orphans == 1 and "" or "s")
        end
        check("vms", orphans == 0 and recorded == 0, vm_detail, "warning")
        local stale = left(plan.runtime_dirs) + left(plan.lock_files) + left(plan.python_files)
        local found = #plan.runtime_dirs + #plan.lock_files + #plan.python_files
        check("runtime_files", stale == 0, stale > 0
            and ("%d stale file%s or director%s: 'maqet doctor --fix' or 'maqet cleanup' removes them"):format(
                stale, stale == 1 and "" or "s", stale == 1 and "y" or "ies")
            or (found > 0 and ("removed %d stale file%s or director%s"):format(found, found == 1 and "" or "s", found == 1 and "y" or "ies")
                or "none stale"), "warning")

        for _, program in ipairs({ { "qemu", qemu.default_binary }, { "qemu_img", "qemu-img" } }) do
            local path, detail = version_of(program[2])
            check(program[1], path ~= nil, path and (path .. ": " .. detail)
                or (tostring(detail) .. " (install the Debian packages qemu-system-x86 and qemu-utils)"))
        end

        local kvm, kvm_err = io.open("/dev/kvm", "r+")
        if kvm then kvm:close() end
        check("kvm", kvm ~= nil, kvm and "/dev/kvm can be opened: VMs may use KVM"
            or ("not usable (%s): VMs run under TCG emulation, slower"):format(tostring(kvm_err)), "warning")

        local dir, dir_err = maqet.runtime_dir()
        local st = dir and maqet.fs.stat(dir)
        check("runtime_dir", st ~= nil and st.mode == 448, dir
            and ("%s (mode %s)"):format(dir, st and ("%o"):format(st.mode) or "?") or tostring(dir_err))

        local data = maqet.data_dir()
        local space, space_err = data and maqet.fs.space(data)
        check("disk_space", space ~= nil and space.available_bytes >= doctor.low_space_bytes, space
            and ("%s available of %s in %s"):format(mib(space.available_bytes), mib(space.total_bytes), data)
            or tostring(space_err), "warning")

        return { checks = checks, errors = errors, warnings = warnings, fixed = fixed, healthy = #errors == 0 }
    end,
}
