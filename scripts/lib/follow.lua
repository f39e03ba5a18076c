-- scripts/lib/follow.lua: reading the events logs back, as they grow (events.follow, the
-- iterator behind maqet.vm.events and `maqet events`). The format is lib/events.lua's; this is
-- its own file so that the runner, which loads lib/events.lua to write, does not compile it.

local qemu = require("maqet.lib.qemu")
local files = require("maqet.lib.files")

local follow = {}

follow.poll_ms = 100        -- how often follow looks at the files
follow.rescan_ms = 1000     -- how often follow looks for VMs added (and logs created) since

--- Follows the events logs of the VMs `names` (a list; nil or empty: every VM, and the VMs added
--- while it follows) and returns an iterator over their entries: each call returns the next
--- entry decoded (a table; `{unreadable = true}` for a line that is not a JSON object) and the
--- line as it is in the log, or nil once `opts.timeout_ms` has passed.
--- opts: from = "end" (default: only what is written from now on) | "start" (the whole current
--- log first); timeout_ms (for the whole iteration; absent: no end); poll_ms (default 100).
--- A log that appears later (a VM's first start, a VM added later) is read from its beginning;
--- a log rotated by a runner's start is followed into its new file.
--- Returns the iterator, or nil, message, "ENOVM" for a name that is no VM.
---@param names? string[]
---@param opts? {from: "end"|"start"|nil, timeout_ms: number?, poll_ms: integer?}
function follow.follow(names, opts)
    names = names or {}
    opts = opts or {}
    if type(names) ~= "table" then error("maqet.vm.events: names must be a list of VM names or nil", 2) end
    if type(opts) ~= "table" then error("maqet.vm.events: opts must be a table or nil", 2) end
    for i, name in ipairs(names) do
        if type(name) ~= "string" or name == "" then
            error(("maqet.vm.events: names[%d] must be a non-empty string"):format(i), 2)
        end
    end
    local from = opts.from or "end"
    if from ~= "end" and from ~= "start" then
        error(("maqet.vm.events: opts.from must be \"end\" or \"start\", got %s"):format(tostring(opts.from)), 2)
    end
    local timeout_ms, poll_ms = opts.timeout_ms, opts.poll_ms or follow.poll_ms
    if timeout_ms ~= nil and (type(timeout_ms) ~= "number" or timeout_ms < 0) then
        error("maqet.vm.events: opts.timeout_ms must be a number >= 0", 2)
    end
    if math.type(poll_ms) ~= "integer" or poll_ms <= 0 then
        error("maqet.vm.events: opts.poll_ms must be an integer > 0", 2)
    end
    local resolved = {}
    for i, name in ipairs(names) do
        local row, missing, missing_code = require("maqet.lib.vm").resolve(name)
        if not row then return nil, missing, missing_code end
        resolved[i] = row.name
    end
    names = resolved

    local followed, order = {}, {} -- events log path -> {path, offset, partial}; paths in the order found
    local function scan(first)
        local rows = {}
        if #names > 0 then
            for _, name in ipairs(names) do
                rows[#rows + 1] = assert(maqet.db:query("SELECT id, name FROM vm_instances WHERE name = ?", name))[1]
            end
        else
            rows = assert(maqet.db:query("SELECT id, name FROM vm_instances ORDER BY name"))
        end
        for _, row in ipairs(rows) do
            local path = qemu.paths(row).events_log
            if path and not followed[path] then
                -- Logs there at the start: from their end unless asked otherwise; a log that
                -- appears (or a VM that is added) while we follow: from its beginning.
                local offset = (first and from == "end") and (files.size(path) or 0) or 0
                followed[path] = { path = path, offset = offset, partial = "" }
                order[#order + 1] = path
            end
        end
    end

    local queue, head = {}, 1
    local function read_new()
        for _, path in ipairs(order) do
            local state = followed[path]
            local text, size = files.read_range(path, state.offset)
            if text and size < state.offset then -- rotated: the new file from its start
                state.offset, state.partial = 0, ""
                text = files.read_range(path, 0)
            end
            if text and text ~= "" then
                state.offset = state.offset + #text
                text = state.partial .. text
                local last = 1
                for line, stop in text:gmatch("([^\n]*)\n()") do
                    if line ~= "" then
                        local entry = maqet.json.decode(line)
                        if type(entry) ~= "table" then entry = { unreadable = true } end
                        queue[#queue + 1] = { entry, line }
                    end
                    last = stop
                end
                state.partial = text:sub(last)
            end
        end
    end

    scan(true)
    local deadline = timeout_ms and (maqet.now() + timeout_ms / 1000) or nil
    local next_scan = maqet.now() + follow.rescan_ms / 1000
    return function()
        while true do
            if head <= #queue then
                local item = queue[head]
                queue[head], head = nil, head + 1
                return item[1], item[2]
            end
            queue, head = {}, 1
            read_new()
            if #queue == 0 then
                local now = maqet.now()
                if deadline and now >= deadline then return nil end
                local wait_ms = poll_ms
                if deadline then wait_ms = math.max(1, math.min(wait_ms, math.ceil((deadline - now) * 1000))) end
                maqet.sleep(wait_ms)
                if maqet.now() >= next_scan then
                    scan(false)
                    next_scan = maqet.now() + follow.rescan_ms / 1000
                end
            end
        end
    end
end

return follow
