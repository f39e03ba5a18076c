-- maqet wait NAME (--for STATE | --console REGEX) [--timeout S]
-- Waits until the VM reaches STATE (running, paused, stopped, crashed) or its console prints
-- REGEX since its current boot began (lib/wait.lua). Exit 0 when reached, 124 on timeout.
local wait = require("maqet.lib.wait")
local console = require("maqet.lib.console")

local status_of_code = { ENOVM = "not_found", EAMBIGUOUS = "usage", ETIMEDOUT = "timeout", EINVAL = "usage" }

return {
    description = "Wait for a VM to reach a state, or for its console to print a pattern",
    run = function(args)
        if type(args.name) ~= "string" or args.name == "" then
            maqet.error("wait: a VM name is required", "usage")
        end
        local result, message, code = wait.wait(args.name, {
            state = args["for"],
            console = args.console,
            timeout_ms = args.timeout and math.floor(args.timeout * 1000) or nil,
        })
        if result then
            -- For the one-line report: the match with control bytes made visible (\r, \n, \xNN).
            if result.match then result.match = console.visible(result.match) end
            return result
        end
        maqet.error(message, status_of_code[code] or "failure")
    end,
}
