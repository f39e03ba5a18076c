-- scripts/lib/files.lua: the small file reads the libraries share (the logs they follow, /proc).
-- Lua's io, in one place; what the host adds (stat, realpath) is maqet.fs.

local files = {}

--- The size in bytes of the file at `path`, or nil when there is none.
---@param path string
---@return integer?
function files.size(path)
    local info = path and maqet.fs.stat(path)
    return info and info.size or nil
end

--- The whole content of the file at `path` (read to its end, so /proc files work too), or nil
--- and io's message.
---@param path string
---@return string? text
---@return string? message
function files.read(path)
    local f, err = io.open(path, "rb")
    if not f then return nil, err end
    local text = f:read("a") or ""
    f:close()
    return text
end

--- The bytes of the (regular) file at `path` from offset `from` (default 0) up to offset `to`
--- (default: its end), and the file's size: "" when it ends at or before `from` (a size below
--- `from` tells a follower that the file was replaced). nil and io's message when it cannot be
--- opened.
---@param path string
---@param from? integer
---@param to? integer
---@return string? text
---@return integer|string size_or_message
function files.read_range(path, from, to)
    local f, err = io.open(path, "rb")
    if not f then return nil, err end
    from = from or 0
    local size = f:seek("end")
    to = math.min(to or size, size)
    local text = ""
    if to > from then
        f:seek("set", from)
        text = f:read(to - from) or ""
    end
    f:close()
    return text, size
end

return files
