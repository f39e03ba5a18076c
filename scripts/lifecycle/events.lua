-- maqet events [NAME ...] [--format text|json]
-- Follows the events logs (<data dir>/logs/<name>.events.jsonl, named by qemu.paths; written by
-- the runner's hooks and by vm.lua, see lib/events.lua) of the named VMs, or of every VM, from
-- their current end, and prints each new entry as one line until Ctrl-C. VMs added later and
-- logs that appear later (a VM's first start) are picked up; a log rotated by a runner's start
-- is followed into its new file.
--   text: TIME VM EVENT details   (details: "status (reason)" for a status change, the event's
--         data as compact JSON for a QMP event, nothing when it has none)
--   json: the log's JSON line as it is
local qemu = require("maqet.lib.qemu")

local poll_ms = 100      -- how often the files are looked at
local rescan_every = 10  -- polls between looks for new VMs (about 1 s)

local function size_of(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local size = f:seek("end")
    f:close()
    return size
end

local function describe(line, format)
    if format == "json" then return line end
    local entry = maqet.json.decode(line)
    if type(entry) ~= "table" then return line end
    local details = ""
    if entry.event == "state" then
        details = tostring(entry.status) .. (entry.reason and (" (" .. tostring(entry.reason) .. ")") or "")
    elseif type(entry.data) == "table" and next(entry.data) ~= nil then
        details = maqet.json.encode(entry.data)
    end
    local out = ("%s %s %s"):format(tostring(entry.time), tostring(entry.vm), tostring(entry.event))
    if details ~= "" then out = out .. " " .. details end
    return out
end

return {
    description = "Print the QMP events and status changes of VMs as they happen, until Ctrl-C",
    run = function(args)
        local names = args.names or {}
        local format = args.format == "json" and "json" or "text"
        for _, name in ipairs(names) do
            if not maqet.db:query("SELECT 1 FROM vm_instances WHERE name = ?", name)[1] then
                maqet.error(("no VM named '%s' (see 'maqet ls')"):format(name), "not_found")
            end
        end
        local followed = {} -- events log path -> {offset, partial}
        local function scan(first)
            local rows
            if #names > 0 then
                rows = {}
                for _, name in ipairs(names) do
                    rows[#rows + 1] = maqet.db:query("SELECT id, name FROM vm_instances WHERE name = ?", name)[1]
                end
            else
                rows = assert(maqet.db:query("SELECT id, name FROM vm_instances ORDER BY name"))
            end
            for _, row in ipairs(rows) do
                local path = qemu.paths(row).events_log
                if path and not followed[path] then
                    -- From the end for what exists when we start; from the beginning for a log
                    -- that appears (or a VM that is added) while we follow.
                    followed[path] = { offset = first and (size_of(path) or 0) or 0, partial = "" }
                end
            end
        end
        scan(true)
        local polls = 0
        while true do
            for path, state in pairs(followed) do
                local size = size_of(path)
                if size and size < state.offset then state.offset, state.partial = 0, "" end -- rotated
                if size and size > state.offset then
                    local f = io.open(path, "rb")
                    if f then
                        f:seek("set", state.offset)
                        local text = f:read(size - state.offset) or ""
                        f:close()
                        state.offset = state.offset + #text
                        text = state.partial .. text
                        local last = 1
                        for line, stop in text:gmatch("([^\n]*)\n()") do
                            if line ~= "" then io.stdout:write(describe(line, format), "\n") end
                            last = stop
                        end
                        state.partial = text:sub(last)
                    end
                end
            end
            io.stdout:flush()
            maqet.sleep(poll_ms)
            polls = polls + 1
            if polls % rescan_every == 0 then scan(false) end
        end
    end,
}
