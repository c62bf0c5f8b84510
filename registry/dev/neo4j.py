"""Neo4j 5 Community, embedded in the small Java launcher ``tools/neo4j/Main.java``.

The launcher's libraries (``org.neo4j:neo4j`` and ``org.neo4j:neo4j-bolt``
5.26.x, which run on Java 17) are resolved from Maven Central by
``tools/neo4j/pom.xml`` into ``tools/neo4j/lib`` the first time (``make tools``
does the same). The server is ready when Bolt answers a query.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from registry.dev.base import HOST, DevServer, DevServerError, Launch, install_once, tools_dir, which

JAVA_OPTS = ["-Xmx1g", "-Xms256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             "-Dfile.encoding=UTF-8"]


def launcher_dir() -> Path:
    return tools_dir() / "neo4j"


def resolve_libraries() -> Path:
    """Resolve the Neo4j jars with Maven into ``tools/neo4j/lib`` (once; a stamp marks it done)."""
    folder = launcher_dir()
    install_once(
        ["mvn", "-q", "-B", "dependency:copy-dependencies", "-DoutputDirectory=lib"],
        cwd=folder, stamp=folder / "lib" / ".resolved", source=folder / "pom.xml", timeout=1200,
        missing=("Neo4j's libraries are not resolved and Maven (mvn) is not installed",
                 "install Maven (apt-get install maven) or run `make tools` where it is"),
        failed=("Maven could not resolve Neo4j",
                f"run `mvn dependency:copy-dependencies -DoutputDirectory=lib` in {folder}"),
    )
    return folder / "lib"


def compile_launcher() -> Path:
    """Compile Main.java into tools/neo4j/target/classes when it changed; return that folder."""
    folder = launcher_dir()
    classes = folder / "target" / "classes"
    main_class = classes / "Main.class"
    source = folder / "Main.java"
    if main_class.exists() and main_class.stat().st_mtime >= source.stat().st_mtime:
        return classes
    classes.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["javac", "-d", str(classes), "-cp", str(folder / "lib" / "*"), str(source)],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise DevServerError(f"javac failed on {source}: {done.stderr.strip()[:300]}",
                             hint="check the Java version (`java -version`, 17 or later)")
    return classes


class Neo4jServer(DevServer):
    name = "neo4j"
    type = "neo4j"
    start_timeout = 180.0

    def unavailable(self) -> str | None:
        if which("java") is None or which("javac") is None:
            return "Java 17 (java and javac) is not installed"
        if not (launcher_dir() / "Main.java").exists():
            return f"the Neo4j launcher is missing ({launcher_dir() / 'Main.java'})"
        return None

    def prepare(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        resolve_libraries()
        compile_launcher()

    def launch(self, data_dir: Path, port: int) -> Launch:
        folder = launcher_dir()
        classpath = f"{folder / 'target' / 'classes'}:{folder / 'lib' / '*'}"
        argv = ["java", *JAVA_OPTS, "-cp", classpath, "Main", "--data", str(data_dir / "db"),
                "--host", HOST, "--port", str(port)]
        return Launch(argv, data_dir)

    def probe(self, port: int) -> str | None:
        import neo4j
        from neo4j.exceptions import DriverError, Neo4jError

        try:
            with neo4j.GraphDatabase.driver(f"bolt://{HOST}:{port}", auth=None,
                                            connection_timeout=2, max_connection_lifetime=10) as driver:
                with driver.session() as session:  # a plain session: no retries while it starts
                    record = session.run("CALL dbms.components() YIELD versions, edition "
                                         "RETURN versions[0] AS v, edition AS e").single()
                return f"{record['v']} {record['e']}"
        except (DriverError, Neo4jError, OSError):
            return None

    def url(self, port: int) -> str:
        return f"bolt://{HOST}:{port}"
