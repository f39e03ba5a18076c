import XCTest

final class CLIBasicsTests: XCTestCase {
    func testVersionAndHelp() {
        let sandbox = Sandbox()
        let version = sandbox.maqet(["--version"], useDataDirOption: false)
        version.assertExit(0)
        XCTAssertTrue(version.stdout.range(of: #"^\d+\.\d+\.\d+"#, options: .regularExpression) != nil, version.stdout)
        let help = sandbox.maqet(["--help"], useDataDirOption: false)
        help.assertExit(0)
        XCTAssertTrue(help.stdout.contains("Exit codes"), help.stdout)
    }
}
