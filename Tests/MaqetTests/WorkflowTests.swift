import XCTest
@testable import MaqetCore
@testable import MaqetRuntime

/// Workflow scripts: lookup order, `require("maqet.lib.*")`, `maqet.error` exit statuses, and
/// running a workflow from Swift.
final class WorkflowTests: XCTestCase {
    func testLibraryLookupPrefersScriptsDirThenUserConfig() {
        let sandbox = Sandbox()
        let userLib = sandbox.home + "/xdg-config/maqet/scripts/lib"
        sandbox.write("xdg-config/maqet/scripts/lib/greet.lua", "return { who = 'user copy' }\n")
        sandbox.write("xdg-config/maqet/scripts/lib/only_user.lua", "return { who = 'only user' }\n")
        sandbox.write("override/lib/greet.lua", "return { who = 'scripts-dir copy' }\n")
        let script = sandbox.write("s.lua", """
            print(require("maqet.lib.greet").who)
            print(require("maqet.lib.only_user").who)
            local ok, err = pcall(require, "maqet.lib.missing")
            print(ok, (err:match("no file scripts/lib/missing.lua")))
            """)
        let withOverride = sandbox.maqet(["--scripts-dir", sandbox.root.file("override"), "run", script])
        withOverride.assertExit(0)
        XCTAssertEqual(withOverride.stdout, "scripts-dir copy\nonly user\nfalse\tno file scripts/lib/missing.lua\n")

        sandbox.extraEnvironment["MAQET_SCRIPTS_DIR"] = sandbox.root.file("override")
        XCTAssertEqual(sandbox.maqet(["run", script]).stdout.split(separator: "\n").first, "scripts-dir copy")
        sandbox.extraEnvironment["MAQET_SCRIPTS_DIR"] = nil

        let userOnly = sandbox.maqet(["run", script])
        userOnly.assertExit(0)
        XCTAssertTrue(userOnly.stdout.hasPrefix("user copy\n"), userOnly.stdout)

        let list = sandbox.maqet(["scripts", "list", "--format", "json"])
        list.assertExit(0)
        XCTAssertTrue(list.stdout.contains("\"path\": \"\(userLib)/greet.lua\""), list.stdout)
        XCTAssertTrue(list.stdout.contains("\"origin\": \"user\""), list.stdout)
    }

    func testErrorInALibraryPointsAtItsFile() {
        let sandbox = Sandbox()
        let lib = sandbox.write("override/lib/broken.lua", "local x = 1\nerror('broken on purpose')\n")
        let script = sandbox.write("s.lua", "require('maqet.lib.broken')\n")
        let result = sandbox.maqet(["--scripts-dir", sandbox.root.file("override"), "run", script])
        result.assertExit(1)
        XCTAssertTrue(result.stderr.contains("\(lib):2: broken on purpose"), result.stderr)
    }

    func testMaqetErrorSetsTheExitStatusAndPrintsOneLine() {
        let sandbox = Sandbox()
        let notFound = sandbox.maqet(["run", sandbox.write("a.lua", "maqet.error(\"no VM named 'x'\", 'not_found')\n")])
        notFound.assertExit(5)
        XCTAssertEqual(notFound.stderr, "maqet: no VM named 'x'\n")

        let failure = sandbox.maqet(["run", sandbox.write("b.lua", "maqet.error('plain failure')\n")])
        failure.assertExit(1)
        XCTAssertEqual(failure.stderr, "maqet: plain failure\n")

        let caught = sandbox.maqet(["run", sandbox.write("c.lua", """
            local ok, e = pcall(maqet.error, 'busy', 'refused')
            print(ok, tostring(e), e.message, e.status)
            """)])
        caught.assertExit(0)
        XCTAssertEqual(caught.stdout, "false\tbusy\tbusy\trefused\n")

        let misuse = sandbox.maqet(["run", sandbox.write("d.lua", "\nmaqet.error('x', 'nonsense')\n")])
        misuse.assertExit(1)
        XCTAssertTrue(misuse.stderr.contains("d.lua:2: maqet.error: status must be one of"), misuse.stderr)
    }

    func testScriptsShowAndUnknownName() {
        let sandbox = Sandbox()
        let text = "return { description = 'mine', run = function() end }\n"
        sandbox.write("override/lifecycle/mine.lua", text)
        let show = sandbox.maqet(["--scripts-dir", sandbox.root.file("override"), "scripts", "show", "lifecycle/mine.lua"])
        show.assertExit(0)
        XCTAssertEqual(show.stdout, text)
        let builtIn = sandbox.maqet(["--scripts-dir", sandbox.root.file("override"), "scripts", "show", "--built-in", "lifecycle/mine.lua"])
        builtIn.assertExit(5)
        XCTAssertTrue(builtIn.stderr.contains("no script named 'lifecycle/mine.lua'"), builtIn.stderr)
    }

    func testRunWorkflowReturnsItsResultAndMapsErrors() throws {
        let dir = TempDir()
        let write = { (name: String, text: String) in
            let path = dir.file(name)
            try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        }
        write("lifecycle/echo.lua", """
            return {
                description = "echo",
                run = function(args)
                    if args.fail == "missing" then maqet.error("no VM named '" .. args.name .. "'", "not_found") end
                    if args.fail == "bug" then local t = nil; return t.field end
                    return { name = args.name, doubled = args.n * 2, tags = maqet.json.array({}) }
                end,
            }
            """)
        write("lifecycle/not_a_workflow.lua", "return 42\n")
        let runtime = Runtime(verbosity: 0, scripts: ScriptLocator(scriptsDirOption: dir.path, environment: ["HOME": dir.path]))

        let result = try runtime.runWorkflow("lifecycle/echo.lua", arguments: .object([("name", .string("web")), ("n", .integer(21))]))
        XCTAssertEqual(result, .object([("doubled", .integer(42)), ("name", .string("web")), ("tags", .array([]))]))

        XCTAssertThrowsError(try runtime.runWorkflow("lifecycle/echo.lua", arguments: .object([("name", .string("x")), ("fail", .string("missing"))]))) { error in
            let error = error as? MaqetError
            XCTAssertEqual(error?.status, .notFound)
            XCTAssertEqual(error?.message, "no VM named 'x'")
        }
        XCTAssertThrowsError(try runtime.runWorkflow("lifecycle/echo.lua", arguments: .object([("n", .integer(1)), ("fail", .string("bug"))]))) { error in
            let error = error as? MaqetError
            XCTAssertEqual(error?.status, .failure)
            XCTAssertTrue(error?.message.hasPrefix("\(dir.path)/lifecycle/echo.lua:5: attempt to index") ?? false, "\(String(describing: error))")
            XCTAssertFalse(error?.message.contains("stack traceback") ?? true)
        }
        XCTAssertThrowsError(try runtime.runWorkflow("lifecycle/not_a_workflow.lua")) { error in
            XCTAssertTrue((error as? MaqetError)?.message.contains("must return a table with a run(args) function") ?? false, "\(error)")
        }
        XCTAssertThrowsError(try runtime.runWorkflow("lifecycle/nope.lua")) { error in
            XCTAssertEqual((error as? MaqetError)?.status, .notFound)
        }
        // The stack is balanced after every outcome.
        XCTAssertEqual(runtime.lua.top, 0)
    }
}
