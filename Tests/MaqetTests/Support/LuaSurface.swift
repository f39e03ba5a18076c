import Foundation
import XCTest

/// What the host registers for Lua, read from a real `maqet run`: the one walk that StubsTests
/// (docs must match) and LuaHostileFaultTests (every function gets every Lua type) share.
enum LuaSurface {
    /// Prints entries like "function maqet.process.run", "method maqet.database:exec",
    /// "field maqet.version", one a line, sorted: the live `maqet` table and the handle
    /// metatables (registry entries named maqet.* with an __index table).
    static let walk = """
        local out = {}
        local function has_functions(t)
          for _, v in pairs(t) do if type(v) == "function" then return true end end
          return false
        end
        for k, v in pairs(maqet) do
          local name = "maqet." .. k
          if type(v) == "function" then
            out[#out + 1] = "function " .. name
          elseif type(v) == "table" and has_functions(v) then
            for k2, v2 in pairs(v) do
              out[#out + 1] = (type(v2) == "function" and "function " or "field ") .. name .. "." .. k2
            end
          else
            out[#out + 1] = "field " .. name
          end
        end
        for k, v in pairs(debug.getregistry()) do
          if type(k) == "string" and k:match("^maqet%.") and type(v) == "table" and type(v.__index) == "table" then
            for method in pairs(v.__index) do out[#out + 1] = "method " .. k .. ":" .. method end
          end
        end
        table.sort(out)
        print(table.concat(out, "\\n"))
        """

    /// Runs the walk in `sandbox` and returns its entries (the test fails when maqet run does).
    static func registered(in sandbox: Sandbox, file: StaticString = #filePath, line: UInt = #line) -> Set<String> {
        let result = sandbox.runScript(walk, name: "surface.lua")
        result.assertExit(0, file: file, line: line)
        return Set(result.stdout.split(separator: "\n").map(String.init))
    }
}
