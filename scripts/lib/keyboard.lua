-- maqet.lib.keyboard: text to QEMU key codes ("qcodes", as QMP send-key takes them), for
-- `maqet qmp NAME type TEXT`. A US keyboard layout is assumed (as the guest's default keymap
-- is): a character is one key, or shift plus one key.
--
-- Policy:
-- * Letters, digits, space, newline (ret) and tab (tab) map to their key; an upper-case letter
--   and the shifted punctuation (~ ! @ # $ % ^ & * ( ) _ + { } | : " < > ?) add shift.
-- * Anything else (other control characters, non-ASCII) cannot be typed: keyboard.plan names
--   every such character at once, so nothing is sent for a text that cannot be typed whole.

local keyboard = {}

-- The unshifted punctuation keys and the characters shift makes of them (US layout).
local punctuation = {
    ["`"] = "grave_accent", ["-"] = "minus", ["="] = "equal", ["["] = "bracket_left",
    ["]"] = "bracket_right", ["\\"] = "backslash", [";"] = "semicolon", ["'"] = "apostrophe",
    [","] = "comma", ["."] = "dot", ["/"] = "slash",
}
local shifted = {
    ["~"] = "grave_accent", ["!"] = "1", ["@"] = "2", ["#"] = "3", ["$"] = "4", ["%"] = "5",
    ["^"] = "6", ["&"] = "7", ["*"] = "8", ["("] = "9", [")"] = "0", ["_"] = "minus",
    ["+"] = "equal", ["{"] = "bracket_left", ["}"] = "bracket_right", ["|"] = "backslash",
    [":"] = "semicolon", ['"'] = "apostrophe", ["<"] = "comma", [">"] = "dot", ["?"] = "slash",
}
local named = { [" "] = "spc", ["\n"] = "ret", ["\t"] = "tab" }

--- The keys that type one character (pressed together, the modifier first), or nil.
---@param c string one character
---@return string[]|nil
function keyboard.keys(c)
    if c:find("^[a-z0-9]$") then return { c } end
    if c:find("^[A-Z]$") then return { "shift", c:lower() } end
    if named[c] then return { named[c] } end
    if punctuation[c] then return { punctuation[c] } end
    if shifted[c] then return { "shift", shifted[c] } end
    return nil
end

-- How a character that cannot be typed is named in the error.
local function describe(c)
    local cp = utf8.codepoint(c)
    if cp < 0x20 or cp == 0x7F then return ("U+%04X (a control character)"):format(cp) end
    return ("'%s' (U+%04X)"):format(c, cp)
end

--- The key chords that type `text`, one per character; nil and a message naming every
--- character that cannot be typed (the text is not valid UTF-8: nil and a message too).
---@param text string
---@return string[][]|nil chords
---@return string? message
function keyboard.plan(text)
    if type(text) ~= "string" or text == "" then return nil, "there is no text to type" end
    if not utf8.len(text) then
        return nil, "the text is not valid UTF-8; only printable ASCII, newlines and tabs can be typed"
    end
    local chords, bad, seen = {}, {}, {}
    local position = 0
    for _, cp in utf8.codes(text) do
        position = position + 1
        local c = utf8.char(cp)
        local keys = keyboard.keys(c)
        if keys then
            chords[#chords + 1] = keys
        elseif not seen[c] then
            seen[c] = true
            bad[#bad + 1] = ("%s at position %d"):format(describe(c), position)
        end
    end
    if #bad > 0 then
        return nil, ("cannot type %s: only printable ASCII, newlines and tabs can be typed (US layout)"):format(
            table.concat(bad, ", "))
    end
    return chords
end

return keyboard
