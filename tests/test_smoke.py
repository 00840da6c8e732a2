from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import write_csv


def test_import_then_list_keeps_accents(cli, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "export.csv",
        "Courriel;Prénom;Nom\r\nhelene@exemple.fr;Hélène;Dupont\r\n",
        encoding="cp1252",
    )
    assert cli("import", str(source)).code == 0
    listed = cli("subscribers", "list", "--json")
    assert listed.code == 0
    assert json.loads(listed.stdout) == [
        {
            "email": "helene@exemple.fr",
            "first_name": "Hélène",
            "last_name": "Dupont",
            "civility": None,
            "status": "active",
            "attributes": {},
        }
    ]
