"""A multilingual sample corpus written for this project, generated deterministically.

Four topics in fourteen languages; bodies mix sentences of one topic with a realistic
(log-normal) length spread, so nearest neighbours are meaningful and chunking is exercised.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator

TOPICS = ("climate", "cooking", "football", "computing")

# language -> topic -> (title, sentences)
TEXT: dict[str, dict[str, tuple[str, list[str]]]] = {
    "en": {
        "climate": (
            "Rising sea levels and coastal cities",
            [
                "Sea levels are rising as glaciers and ice sheets melt.",
                "Coastal cities are building barriers against storm surges.",
                "Warmer oceans make hurricanes stronger and wetter.",
            ],
        ),
        "cooking": (
            "How to bake bread at home",
            [
                "Mix flour, water, salt and yeast into a soft dough.",
                "Let the dough rise for several hours before baking.",
                "Bake the loaf in a hot oven until the crust is golden.",
            ],
        ),
        "football": (
            "The league title race",
            [
                "The striker scored twice in the second half.",
                "The goalkeeper saved a penalty in the final minute.",
                "The club leads the league table after the weekend.",
            ],
        ),
        "computing": (
            "Databases and caching",
            [
                "A cache keeps frequently read data in memory.",
                "The database stores documents on disk with an index.",
                "Queries return faster when the index fits in memory.",
            ],
        ),
    },
    "de": {
        "climate": (
            "Steigender Meeresspiegel und Küstenstädte",
            [
                "Der Meeresspiegel steigt, weil Gletscher und Eisschilde schmelzen.",
                "Küstenstädte bauen Schutzwälle gegen Sturmfluten.",
                "Wärmere Ozeane machen Wirbelstürme stärker.",
            ],
        ),
        "cooking": (
            "Brot zu Hause backen",
            [
                "Mehl, Wasser, Salz und Hefe zu einem weichen Teig verkneten.",
                "Den Teig mehrere Stunden gehen lassen.",
                "Das Brot im heißen Ofen backen, bis die Kruste goldbraun ist.",
            ],
        ),
        "football": (
            "Das Rennen um die Meisterschaft",
            [
                "Der Stürmer traf in der zweiten Halbzeit zweimal.",
                "Der Torwart hielt in der letzten Minute einen Elfmeter.",
                "Der Verein führt die Tabelle nach dem Wochenende an.",
            ],
        ),
        "computing": (
            "Datenbanken und Caches",
            [
                "Ein Cache hält häufig gelesene Daten im Arbeitsspeicher.",
                "Die Datenbank speichert Dokumente mit einem Index auf der Festplatte.",
                "Abfragen sind schneller, wenn der Index in den Speicher passt.",
            ],
        ),
    },
    "fr": {
        "climate": (
            "La montée des eaux et les villes côtières",
            [
                "Le niveau de la mer monte à cause de la fonte des glaciers.",
                "Les villes côtières construisent des digues contre les tempêtes.",
                "Des océans plus chauds rendent les ouragans plus violents.",
            ],
        ),
        "cooking": (
            "Faire son pain à la maison",
            [
                "Mélanger la farine, l'eau, le sel et la levure en une pâte souple.",
                "Laisser lever la pâte pendant plusieurs heures.",
                "Cuire le pain au four chaud jusqu'à ce que la croûte soit dorée.",
            ],
        ),
        "football": (
            "La course au titre",
            [
                "L'attaquant a marqué deux fois en seconde période.",
                "Le gardien a arrêté un penalty à la dernière minute.",
                "Le club est en tête du championnat après le week-end.",
            ],
        ),
        "computing": (
            "Bases de données et cache",
            [
                "Un cache garde en mémoire les données souvent lues.",
                "La base de données stocke les documents sur disque avec un index.",
                "Les requêtes sont plus rapides quand l'index tient en mémoire.",
            ],
        ),
    },
    "es": {
        "climate": (
            "La subida del mar y las ciudades costeras",
            [
                "El nivel del mar sube porque se derriten los glaciares.",
                "Las ciudades costeras construyen barreras contra las tormentas.",
                "Los océanos más cálidos hacen más fuertes los huracanes.",
            ],
        ),
        "cooking": (
            "Cómo hacer pan en casa",
            [
                "Mezcla harina, agua, sal y levadura hasta obtener una masa suave.",
                "Deja reposar la masa varias horas antes de hornear.",
                "Hornea el pan hasta que la corteza esté dorada.",
            ],
        ),
        "football": (
            "La lucha por el título de liga",
            [
                "El delantero marcó dos goles en la segunda parte.",
                "El portero paró un penalti en el último minuto.",
                "El club lidera la clasificación tras el fin de semana.",
            ],
        ),
        "computing": (
            "Bases de datos y caché",
            [
                "Una caché guarda en memoria los datos que se leen a menudo.",
                "La base de datos guarda documentos en disco con un índice.",
                "Las consultas son más rápidas si el índice cabe en memoria.",
            ],
        ),
    },
    "it": {
        "climate": (
            "L'innalzamento del mare e le città costiere",
            [
                "Il livello del mare sale perché i ghiacciai si sciolgono.",
                "Le città costiere costruiscono barriere contro le mareggiate.",
                "Oceani più caldi rendono gli uragani più forti.",
            ],
        ),
        "cooking": (
            "Fare il pane in casa",
            [
                "Impastare farina, acqua, sale e lievito fino a ottenere un impasto morbido.",
                "Lasciare lievitare l'impasto per alcune ore.",
                "Cuocere il pane in forno caldo finché la crosta è dorata.",
            ],
        ),
        "football": (
            "La corsa allo scudetto",
            [
                "L'attaccante ha segnato due gol nel secondo tempo.",
                "Il portiere ha parato un rigore all'ultimo minuto.",
                "La squadra è in testa alla classifica dopo il fine settimana.",
            ],
        ),
        "computing": (
            "Database e cache",
            [
                "Una cache tiene in memoria i dati letti spesso.",
                "Il database salva i documenti su disco con un indice.",
                "Le query sono più veloci quando l'indice sta in memoria.",
            ],
        ),
    },
    "pt": {
        "climate": (
            "A subida do mar e as cidades costeiras",
            [
                "O nível do mar sobe porque as geleiras estão derretendo.",
                "As cidades costeiras constroem barreiras contra tempestades.",
                "Oceanos mais quentes tornam os furacões mais fortes.",
            ],
        ),
        "cooking": (
            "Como fazer pão em casa",
            [
                "Misture farinha, água, sal e fermento até formar uma massa macia.",
                "Deixe a massa crescer por algumas horas.",
                "Asse o pão no forno quente até a casca ficar dourada.",
            ],
        ),
        "football": (
            "A disputa pelo título",
            [
                "O atacante marcou dois gols no segundo tempo.",
                "O goleiro defendeu um pênalti no último minuto.",
                "O clube lidera o campeonato depois do fim de semana.",
            ],
        ),
        "computing": (
            "Bancos de dados e cache",
            [
                "Um cache mantém na memória os dados lidos com frequência.",
                "O banco de dados guarda documentos no disco com um índice.",
                "As consultas ficam mais rápidas quando o índice cabe na memória.",
            ],
        ),
    },
    "nl": {
        "climate": (
            "Stijgende zeespiegel en kuststeden",
            [
                "De zeespiegel stijgt doordat gletsjers smelten.",
                "Kuststeden bouwen dijken tegen stormvloeden.",
                "Warmere oceanen maken orkanen sterker.",
            ],
        ),
        "cooking": (
            "Zelf brood bakken",
            [
                "Meng bloem, water, zout en gist tot een zacht deeg.",
                "Laat het deeg een paar uur rijzen.",
                "Bak het brood in een hete oven tot de korst goudbruin is.",
            ],
        ),
        "football": (
            "De strijd om de landstitel",
            [
                "De spits scoorde twee keer in de tweede helft.",
                "De keeper stopte een strafschop in de laatste minuut.",
                "De club staat na het weekend bovenaan de ranglijst.",
            ],
        ),
        "computing": (
            "Databases en caches",
            [
                "Een cache houdt vaak gelezen gegevens in het geheugen.",
                "De database slaat documenten op schijf op met een index.",
                "Zoekopdrachten zijn sneller als de index in het geheugen past.",
            ],
        ),
    },
    "pl": {
        "climate": (
            "Podnoszący się poziom morza i miasta nadmorskie",
            [
                "Poziom morza rośnie, ponieważ topnieją lodowce.",
                "Miasta nadmorskie budują wały przeciw sztormom.",
                "Cieplejsze oceany sprawiają, że huragany są silniejsze.",
            ],
        ),
        "cooking": (
            "Jak upiec chleb w domu",
            [
                "Wymieszaj mąkę, wodę, sól i drożdże na miękkie ciasto.",
                "Odstaw ciasto do wyrośnięcia na kilka godzin.",
                "Piecz chleb w gorącym piekarniku, aż skórka się zarumieni.",
            ],
        ),
        "football": (
            "Walka o mistrzostwo",
            [
                "Napastnik strzelił dwa gole w drugiej połowie.",
                "Bramkarz obronił rzut karny w ostatniej minucie.",
                "Klub prowadzi w tabeli po weekendzie.",
            ],
        ),
        "computing": (
            "Bazy danych i pamięć podręczna",
            [
                "Pamięć podręczna trzyma często czytane dane w pamięci.",
                "Baza danych przechowuje dokumenty na dysku z indeksem.",
                "Zapytania są szybsze, gdy indeks mieści się w pamięci.",
            ],
        ),
    },
    "ru": {
        "climate": (
            "Подъём уровня моря и прибрежные города",
            [
                "Уровень моря растёт из-за таяния ледников.",
                "Прибрежные города строят дамбы против штормовых нагонов.",
                "Тёплые океаны делают ураганы сильнее.",
            ],
        ),
        "cooking": (
            "Как испечь хлеб дома",
            [
                "Смешайте муку, воду, соль и дрожжи в мягкое тесто.",
                "Оставьте тесто подниматься на несколько часов.",
                "Выпекайте хлеб в горячей духовке до золотистой корочки.",
            ],
        ),
        "football": (
            "Борьба за чемпионство",
            [
                "Нападающий забил дважды во втором тайме.",
                "Вратарь отбил пенальти на последней минуте.",
                "Клуб возглавляет турнирную таблицу после выходных.",
            ],
        ),
        "computing": (
            "Базы данных и кэширование",
            [
                "Кэш хранит часто читаемые данные в памяти.",
                "База данных хранит документы на диске с индексом.",
                "Запросы выполняются быстрее, когда индекс помещается в память.",
            ],
        ),
    },
    "tr": {
        "climate": (
            "Yükselen deniz seviyesi ve kıyı kentleri",
            [
                "Buzullar eridiği için deniz seviyesi yükseliyor.",
                "Kıyı kentleri fırtınalara karşı set inşa ediyor.",
                "Isınan okyanuslar kasırgaları güçlendiriyor.",
            ],
        ),
        "cooking": (
            "Evde ekmek nasıl yapılır",
            [
                "Un, su, tuz ve mayayı yumuşak bir hamur olana kadar karıştırın.",
                "Hamuru birkaç saat mayalanmaya bırakın.",
                "Ekmeği kabuğu kızarana kadar sıcak fırında pişirin.",
            ],
        ),
        "football": (
            "Şampiyonluk yarışı",
            [
                "Forvet ikinci yarıda iki gol attı.",
                "Kaleci son dakikada bir penaltı kurtardı.",
                "Kulüp hafta sonundan sonra liderliğini sürdürüyor.",
            ],
        ),
        "computing": (
            "Veritabanları ve önbellek",
            [
                "Önbellek sık okunan verileri bellekte tutar.",
                "Veritabanı belgeleri bir dizinle diskte saklar.",
                "Dizin belleğe sığdığında sorgular daha hızlı çalışır.",
            ],
        ),
    },
    "sv": {
        "climate": (
            "Stigande havsnivåer och kuststäder",
            [
                "Havsnivån stiger när glaciärerna smälter.",
                "Kuststäder bygger skydd mot stormfloder.",
                "Varmare hav gör orkanerna kraftigare.",
            ],
        ),
        "cooking": (
            "Baka bröd hemma",
            [
                "Blanda mjöl, vatten, salt och jäst till en mjuk deg.",
                "Låt degen jäsa i några timmar.",
                "Grädda brödet i varm ugn tills skorpan är gyllene.",
            ],
        ),
        "football": (
            "Kampen om ligatiteln",
            [
                "Anfallaren gjorde två mål i andra halvlek.",
                "Målvakten räddade en straff i sista minuten.",
                "Klubben leder tabellen efter helgen.",
            ],
        ),
        "computing": (
            "Databaser och cache",
            [
                "En cache håller ofta lästa data i minnet.",
                "Databasen lagrar dokument på disk med ett index.",
                "Frågor går snabbare när indexet ryms i minnet.",
            ],
        ),
    },
    "zh": {
        "climate": (
            "海平面上升与沿海城市",
            [
                "由于冰川融化，海平面正在上升。",
                "沿海城市正在修建防潮堤抵御风暴潮。",
                "更温暖的海洋使飓风更加猛烈。",
            ],
        ),
        "cooking": (
            "在家烤面包",
            [
                "把面粉、水、盐和酵母揉成柔软的面团。",
                "让面团发酵几个小时。",
                "把面包放进热烤箱烤到外皮金黄。",
            ],
        ),
        "football": (
            "联赛冠军争夺战",
            [
                "前锋在下半场梅开二度。",
                "守门员在最后一分钟扑出了点球。",
                "周末过后俱乐部领跑积分榜。",
            ],
        ),
        "computing": (
            "数据库与缓存",
            [
                "缓存把经常读取的数据保存在内存中。",
                "数据库用索引把文档存储在磁盘上。",
                "当索引能放进内存时查询会更快。",
            ],
        ),
    },
    "ja": {
        "climate": (
            "海面上昇と沿岸都市",
            [
                "氷河が溶けて海面が上昇している。",
                "沿岸都市は高潮に備えて防潮堤を建設している。",
                "温かい海はハリケーンをより強くする。",
            ],
        ),
        "cooking": (
            "家でパンを焼く方法",
            [
                "小麦粉、水、塩、酵母を混ぜて柔らかい生地にする。",
                "生地を数時間発酵させる。",
                "皮がきつね色になるまで熱いオーブンで焼く。",
            ],
        ),
        "football": (
            "リーグ優勝争い",
            [
                "ストライカーは後半に二得点を挙げた。",
                "ゴールキーパーは最後の一分でPKを止めた。",
                "週末を終えてクラブは首位に立っている。",
            ],
        ),
        "computing": (
            "データベースとキャッシュ",
            [
                "キャッシュはよく読まれるデータをメモリに保持する。",
                "データベースは索引付きで文書をディスクに保存する。",
                "索引がメモリに収まるとクエリは速くなる。",
            ],
        ),
    },
    "ar": {
        "climate": (
            "ارتفاع مستوى البحر والمدن الساحلية",
            [
                "يرتفع مستوى سطح البحر بسبب ذوبان الأنهار الجليدية.",
                "تبني المدن الساحلية حواجز ضد العواصف.",
                "المحيطات الأكثر دفئا تجعل الأعاصير أقوى.",
            ],
        ),
        "cooking": (
            "كيف تخبز الخبز في المنزل",
            [
                "اخلط الدقيق والماء والملح والخميرة حتى تحصل على عجينة طرية.",
                "اترك العجينة لتختمر عدة ساعات.",
                "اخبز الرغيف في فرن ساخن حتى تصبح القشرة ذهبية.",
            ],
        ),
        "football": (
            "السباق على لقب الدوري",
            [
                "سجل المهاجم هدفين في الشوط الثاني.",
                "تصدى الحارس لركلة جزاء في الدقيقة الأخيرة.",
                "يتصدر النادي جدول الترتيب بعد عطلة نهاية الأسبوع.",
            ],
        ),
        "computing": (
            "قواعد البيانات والتخزين المؤقت",
            [
                "تحتفظ الذاكرة المؤقتة بالبيانات المقروءة كثيرا في الذاكرة.",
                "تخزن قاعدة البيانات المستندات على القرص مع فهرس.",
                "تصبح الاستعلامات أسرع عندما يتسع الفهرس في الذاكرة.",
            ],
        ),
    },
}

LANGUAGES = tuple(TEXT)
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def generate_documents(
    n: int, *, seed: int = 7, mean_sentences: float = 6.0, start: int = 0
) -> Iterator[dict]:
    """``n`` documents ``doc-000000 ...`` shaped like the source collection."""
    rng = random.Random(seed)
    for i in range(start, start + n):
        language = LANGUAGES[i % len(LANGUAGES)]
        topic = TOPICS[(i // len(LANGUAGES)) % len(TOPICS)]
        title, sentences = TEXT[language][topic]
        count = max(1, round(rng.lognormvariate(0, 0.6) * mean_sentences))
        body = " ".join(rng.choice(sentences) for _ in range(count))
        when = EPOCH + dt.timedelta(minutes=i)
        yield {
            "doc_id": f"doc-{i:06d}",
            "title": title,
            "body": body,
            "language": language,
            "topic": topic,
            "indexed_at": when,
            "modified_at": when,
        }


def load_into(collection: object, documents: list[dict]) -> int:
    """Upsert by doc_id, so loading twice leaves one copy of each document (a document
    without a doc_id is inserted as it is)."""
    from pymongo import InsertOne, ReplaceOne

    ops = [
        ReplaceOne({"doc_id": d["doc_id"]}, d, upsert=True) if "doc_id" in d else InsertOne(dict(d))
        for d in documents
    ]
    written = 0
    for start in range(0, len(ops), 1000):
        result = collection.bulk_write(ops[start : start + 1000], ordered=False)  # type: ignore[attr-defined]
        written += result.upserted_count + result.modified_count + result.inserted_count
    return written
