import Foundation

/// Prints a command's status: a redrawn line with a progress bar on a terminal, plain lines otherwise.
package struct LiveDisplay: Sendable {
    package let isTerminal: Bool

    package init() {
        isTerminal = isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["TERM"] != "dumb"
    }

    /// Shows a status update; on a terminal it replaces the previous one.
    package func update(_ text: String, progress: Double?) {
        if isTerminal {
            var line = "\r\u{1B}[2K"
            if let progress {
                let filled = Int((max(0, min(1, progress)) * 24).rounded())
                line += "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: 24 - filled) + "] "
            }
            line += text
            FileHandle.standardOutput.write(Data(line.utf8))
        } else {
            print(text)
        }
    }

    /// Ends the current status line so normal output can follow.
    package func finishLine() {
        if isTerminal { print("") }
    }

    /// Prints a line that stays, above the status line.
    package func log(_ text: String) {
        if isTerminal { FileHandle.standardOutput.write(Data("\r\u{1B}[2K".utf8)) }
        print(text)
    }
}
