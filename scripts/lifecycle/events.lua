-- maqet events [NAME ...] [--format text|json]
-- Prints each new entry of the events logs of the named VMs, or of every VM, as one line until
-- Ctrl-C: events.follow (lib/events.lua, maqet.vm.events) does the following, from the logs'
-- current end, picking up VMs added later and logs rotated by a runner's start.
--   text: TIME VM EVENT details   (details: "status (reason)" for a status change, the event's
--         data as compact JSON for a QMP event, nothing when it has none)
--   json: the log's JSON line as it is
local events = require("maqet.lib.events")

local function describe(entry, line, format)
    if format == "json" or entry.unreadable then return line end
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
        local format = args.format == "json" and "json" or "text"
        local next_entry, err, code = events.follow(args.names or {})
        if not next_entry then maqet.error(err, code == "EAMBIGUOUS" and "usage" or "not_found") end
        for entry, line in next_entry do
            io.stdout:write(describe(entry, line, format), "\n")
            io.stdout:flush()
        end
    end,
}
