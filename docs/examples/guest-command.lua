-- guest-command.lua: runs one shell command in a running guest by typing it on the guest's
-- serial console, as a person at the console would, and prints what the command printed.
--   maqet run docs/examples/guest-command.lua NAME 'COMMAND' [PROMPT]
-- The guest's console must be an idle interactive shell whose prompt is PROMPT (default
-- "guest# ", the prompt of the test guest in Tests/guest). Exits with the command's exit status.
local name, command, prompt = maqet.args[1], maqet.args[2], maqet.args[3] or "guest# "
if not (name and command) then
    maqet.error("usage: maqet run guest-command.lua NAME 'COMMAND' [PROMPT]", "usage")
end

-- Expected failures (no such VM, not running, no prompt in time) end the script with one line.
local statuses = { ENOVM = "not_found", ETIMEDOUT = "timeout" }
local function check(ok, err, code, ...)
    if not ok then maqet.error(err, statuses[code] or "failure") end
    return ok, err, code, ...
end

local vm = check(maqet.vm.get(name))
if vm.status ~= "running" then
    maqet.error(("VM '%s' is %s, not running (start it with 'maqet start %s')"):format(name, vm.status, name))
end
local console = check(maqet.vm.console(name))

-- The shell is idle when the log ends in its prompt, perhaps followed by terminal escape
-- sequences (busybox's shell asks the terminal where the cursor is, ESC [ 6 n, after each
-- prompt): anchored at the end ("$"), the pattern matches only when nothing was typed after it.
local escaped = prompt:gsub("[][\\.^$*+?(){}|]", "\\%0")
local idle = escaped .. "(\27\\[[0-9;?]*[A-Za-z])*$"
check(console:expect(idle, { timeout_ms = 60000 }))

-- The command line is echoed back before its output. The end marker is printed by the shell
-- after the command has run; its echoed form says "$?", so only the printed one has digits.
local from = console:mark()
check(console:send(command .. '; echo "::exit $?::"\n'))
local marker, _, marker_start = check(console:expect("::exit [0-9]+::", { from = from, timeout_ms = 60000 }))

-- What was printed after the echoed command line, up to the marker, is the command's output. A
-- serial terminal ends lines with "\r\n" (and the shell may break a long echoed line).
local printed = console:read(from, marker_start):gsub("\r", "")
local echoed = printed:find("::exit $?::", 1, true)
if echoed then printed = printed:sub(echoed):gsub("^[^\n]*\n", "") end
io.write(printed)
os.exit(tonumber(marker:match("%d+")))
