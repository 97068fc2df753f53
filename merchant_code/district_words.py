"""Word lists for the synthetic demo district: names, roads, trades, violations, reviews."""

from __future__ import annotations

# (Chinese, romanised) name prefixes for shops
SHOP_PREFIXES: list[tuple[str, str]] = [
    ("老王", "Lao Wang"),
    ("佳佳", "Jiajia"),
    ("阿强", "A Qiang"),
    ("小李", "Xiao Li"),
    ("福满", "Fuman"),
    ("鑫源", "Xinyuan"),
    ("金牌", "Jinpai"),
    ("红星", "Hongxing"),
    ("百味", "Baiwei"),
    ("好运", "Haoyun"),
    ("东方", "Dongfang"),
    ("南翔", "Nanxiang"),
    ("梧桐", "Wutong"),
    ("枫林", "Fenglin"),
    ("徐家", "Xujia"),
    ("康健", "Kangjian"),
    ("华泾", "Huajing"),
    ("天平", "Tianping"),
    ("湖南", "Hunan"),
    ("田林", "Tianlin"),
    ("龙华", "Longhua"),
    ("凌云", "Lingyun"),
    ("长桥", "Changqiao"),
    ("漕河", "Caohe"),
    ("阿婆", "A Po"),
    ("张记", "Zhang Ji"),
    ("陈记", "Chen Ji"),
    ("刘家", "Liu Jia"),
    ("一品", "Yipin"),
    ("乐活", "Lehuo"),
    ("禾木", "Hemu"),
    ("悦来", "Yuelai"),
    ("新民", "Xinmin"),
    ("万家", "Wanjia"),
    ("安心", "Anxin"),
    ("诚信", "Chengxin"),
    ("美味", "Meiwei"),
    ("顺发", "Shunfa"),
    ("德兴", "Dexing"),
    ("永和", "Yonghe"),
    ("兴隆", "Xinglong"),
    ("和平", "Heping"),
    ("春风", "Chunfeng"),
    ("晨光", "Chenguang"),
    ("海棠", "Haitang"),
    ("银杏", "Yinxing"),
    ("青柠", "Qingning"),
    ("蓝湾", "Lanwan"),
]

# trade -> (weight, [(Chinese suffix, English noun)], opening hours)
TRADES: dict[str, tuple[int, list[tuple[str, str]], str]] = {
    "catering": (
        30,
        [
            ("面馆", "Noodles"),
            ("小吃店", "Snacks"),
            ("饺子馆", "Dumplings"),
            ("川菜馆", "Sichuan Kitchen"),
            ("咖啡馆", "Cafe"),
            ("茶餐厅", "Tea Restaurant"),
            ("火锅店", "Hotpot"),
            ("烧烤店", "Barbecue"),
            ("本帮菜馆", "Shanghai Kitchen"),
            ("馄饨铺", "Wonton House"),
        ],
        "10:00-22:00",
    ),
    "food_retail": (
        14,
        [
            ("便利店", "Convenience Store"),
            ("生鲜超市", "Fresh Market"),
            ("水果店", "Fruit Shop"),
            ("烘焙坊", "Bakery"),
            ("粮油店", "Grain and Oil"),
        ],
        "07:00-23:00",
    ),
    "retail": (
        18,
        [
            ("服装店", "Clothing"),
            ("文具店", "Stationery"),
            ("五金店", "Hardware"),
            ("手机店", "Mobile Phones"),
            ("眼镜店", "Opticians"),
        ],
        "09:30-21:30",
    ),
    "hair_beauty": (
        10,
        [("理发店", "Barber"), ("美容院", "Beauty Salon"), ("美甲店", "Nail Studio")],
        "10:00-21:00",
    ),
    "pharmacy": (5, [("大药房", "Pharmacy"), ("药店", "Chemist")], "08:00-22:00"),
    "hotel": (4, [("宾馆", "Guesthouse"), ("酒店", "Hotel"), ("青年旅舍", "Hostel")], "00:00-24:00"),
    "entertainment": (
        4,
        [("KTV", "Karaoke"), ("网吧", "Internet Cafe"), ("棋牌室", "Games Room")],
        "12:00-02:00",
    ),
    "education": (
        5,
        [("培训中心", "Training Centre"), ("艺术学校", "Art School"), ("英语学校", "English School")],
        "09:00-20:00",
    ),
    "repair": (
        6,
        [("家电维修部", "Appliance Repair"), ("修车行", "Car Repair"), ("钟表维修", "Watch Repair")],
        "09:00-19:00",
    ),
    "laundry": (4, [("洗衣店", "Laundry"), ("干洗店", "Dry Cleaner")], "08:00-20:00"),
}

# trade -> licence kinds beyond the business licence every shop has
TRADE_LICENCES: dict[str, list[str]] = {
    "catering": ["food_business"],
    "food_retail": ["food_business"],
    "pharmacy": ["pharmacy"],
    "hair_beauty": ["hygiene"],
    "hotel": ["hygiene"],
    "entertainment": ["hygiene", "entertainment"],
    "education": ["education"],
}

SUBDISTRICTS: list[tuple[str, str]] = [
    ("天平路街道", "Tianping Road"),
    ("湖南路街道", "Hunan Road"),
    ("斜土路街道", "Xietu Road"),
    ("枫林路街道", "Fenglin Road"),
    ("长桥街道", "Changqiao"),
    ("田林街道", "Tianlin"),
    ("虹梅路街道", "Hongmei Road"),
    ("康健新村街道", "Kangjian Xincun"),
    ("徐家汇街道", "Xujiahui"),
    ("凌云路街道", "Lingyun Road"),
    ("龙华街道", "Longhua"),
    ("漕河泾街道", "Caohejing"),
    ("华泾镇", "Huajing Town"),
]

ROADS = [
    "漕溪北路",
    "衡山路",
    "天钥桥路",
    "肇嘉浜路",
    "宜山路",
    "田林路",
    "虹漕路",
    "钦州路",
    "桂林路",
    "龙华路",
    "龙吴路",
    "凯旋路",
    "零陵路",
    "东安路",
    "枫林路",
    "医学院路",
    "斜土路",
    "中山南二路",
    "华山路",
    "乌鲁木齐南路",
    "建国西路",
    "岳阳路",
    "永嘉路",
    "康平路",
    "高安路",
    "吴兴路",
    "汾阳路",
    "复兴西路",
    "淮海中路",
    "武康路",
    "安亭路",
    "余庆路",
    "虹梅路",
    "古美路",
    "凌云路",
    "老沪闵路",
    "罗秀路",
    "百色路",
    "华泾路",
    "龙华中路",
]

SURNAMES = (
    "王李张刘陈杨黄赵周吴徐孙朱马胡郭林何高梁郑罗宋谢唐韩曹许邓萧冯曾程蔡彭潘袁于董余"
    "苏叶吕魏蒋田杜丁沈姜范江傅钟卢汪戴崔任陆廖姚方金邱夏谭韦贾邹石熊孟秦阎薛侯雷白龙"
    "段郝孔邵史毛常万顾赖武康贺严尹钱施牛洪龚"
)
GIVEN_CHARS = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏辉玲建国亮文斌婷雪琳晨浩宇欣怡子涵梓轩佳悦思雨"
)

VIOLATIONS: list[tuple[str, str, bool]] = [
    ("V01", "从业人员未持有效健康证明上岗", True),
    ("V02", "未按规定公示食品经营许可证", False),
    ("V03", "食品原料未索证索票、进货查验记录不全", False),
    ("V04", "使用超过保质期的食品原料", True),
    ("V05", "餐饮具未按规定清洗消毒", True),
    ("V06", "防蝇防鼠防虫设施不到位", False),
    ("V07", "食品贮存生熟混放", True),
    ("V08", "加工场所环境卫生不整洁", False),
    ("V09", "冷藏设施温度不符合要求", False),
    ("V10", "食品添加剂未专柜存放、未记录使用", False),
    ("V11", "从业人员未穿戴清洁工作衣帽", False),
    ("V12", "未建立食品安全自查制度", False),
]

INSPECTION_SUMMARIES = {
    "pass": ["现场检查未发现问题", "各项制度落实到位", "环境整洁，记录完整"],
    "rectify": ["发现问题，责令限期整改", "存在一般问题，要求整改后复查"],
    "fail": ["存在严重问题，依法立案调查", "现场检查不合格，责令停业整改"],
}

REVIEW_BODIES = {
    1: ["卫生太差了", "服务态度很差", "吃完肚子不舒服"],
    2: ["一般般，不会再来", "等了很久才上菜"],
    3: ["还行，价格有点贵", "中规中矩"],
    4: ["味道不错，环境干净", "服务挺好，推荐", "性价比高"],
    5: ["非常好吃，会再来", "老板很热情，干净卫生", "附近最好的一家"],
}

HONOURS = [
    ("放心消费示范店", "汇城区市场监督管理局"),
    ("食品安全示范店", "汇城区市场监督管理局"),
    ("诚信经营示范户", "汇城区消费者权益保护委员会"),
    ("优秀个体工商户", "汇城区个体劳动者协会"),
]

SENTIMENT = [
    ("市民反映{name}门口油烟扰民", "negative"),
    ("{name}获评放心消费示范店", "positive"),
    ("网友称在{name}用餐后身体不适", "negative"),
    ("{name}推出便民服务受好评", "positive"),
    ("记者走访{name}：明码标价执行到位", "neutral"),
]

STAFF_ROLES = ["厨师", "服务员", "店长", "营业员", "收银员", "帮厨"]
