-- scripts/lifecycle/add.lua: `maqet add [CONFIG.yaml ...] [--vm-config FILE ...] [--name NAME] [--empty]`
-- Reads and merges the config files, validates the result, and stores a new VM (status 'created').
-- Every refusal raises one line before anything is written.
local config = require("maqet.lib.config")

return {
    description = "Define a new VM from YAML config files (merged in order)",

    ---@param args {files: string[], name: string?, empty: boolean?}
    run = function(args)
        local db = maqet.db
        local files = args.files or {}
        if args.empty and #files > 0 then
            maqet.error("--empty creates a VM without a config; do not also give config files", "usage")
        end
        if not args.empty and #files == 0 then
            maqet.error("give a config file (maqet add vm.yaml), or --empty for a VM without one", "usage")
        end

        local cfg, origins = {}, {}
        if not args.empty then cfg, origins = config.load_files(files) end

        local name = args.name
        if name == maqet.json.null then name = nil end
        local name_origin = name and "--name" or (cfg.name ~= nil and origins.name) or nil
        if name == nil and cfg.name ~= nil then
            if type(cfg.name) ~= "string" then
                maqet.error(("%s: name: must be a string"):format(origins.name or "config"), "usage")
            end
            name = cfg.name
        end
        if name ~= nil then
            local ok, reason = config.name_ok(name)
            if not ok then
                local where = name_origin == "--name" and "--name: " or (name_origin and (name_origin .. ": name: ") or "")
                maqet.error(where .. reason, "usage")
            end
        end
        cfg.name = nil -- the row's name column is the VM's name; the name is checked above
        cfg = config.validate(cfg, origins)

        return db:transaction(function(tx)
            if name == nil then name = config.generated_name(tx) end
            if tx:scalar("SELECT 1 FROM vm_instances WHERE name = ?", name) then
                maqet.error(("a VM named '%s' already exists (see 'maqet ls'; change it with 'maqet apply %s', or choose another --name)"):format(name, name), "failure")
            end
            local id = config.new_id()
            config.scratch_files(cfg, id) -- storage with a size and no file: an image in the data dir
            local config_path = args.empty and maqet.json.null or config.absolute(files[1], maqet.fs.cwd())
            assert(tx:exec([[INSERT INTO vm_instances (id, name, config_path, config_data, status)
                             VALUES (?, ?, ?, ?, 'created')]],
                id, name, config_path ~= maqet.json.null and config_path or nil, config.encode(cfg)))
            maqet.log.info(("added VM '%s' (id %s)"):format(name, id))
            return { id = id, name = name, config_path = config_path, status = "created", config = cfg }
        end)
    end,
}
